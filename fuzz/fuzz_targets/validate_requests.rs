//! Arbitrary bytes, decoded as grantd requests, must be validated without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    grantd::api::fuzzing::validate(data);
});
