//! A bounded, deterministic stand-in for `cargo fuzz run validate_requests`: random and
//! mutated request bytes through request validation, which must never panic.

use grantd::api::{fuzzing, pb};
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};

const ROUNDS: usize = 20_000;

#[test]
fn validation_survives_random_and_mutated_requests() {
    let mut rng = StdRng::seed_from_u64(0x6772_616e_7464);
    let seeds: Vec<Vec<u8>> = vec![
        pb::AddUserPermissionsRequest {
            organization_id: "acme".into(),
            user_id: "auth0|alice".into(),
            permission_ids: vec!["3f1e5a4c-0b7d-4c43-9f53-2f1c3d4e5f60".into()],
            permission_names: vec!["documents:read".into(), "documents:read".into()],
            resource: Some(pb::Resource { r#type: "organization".into(), id: "acme".into() }),
        }
        .encode_to_vec(),
        pb::RemoveResourcePermissionsRequest {
            user_id: String::new(),
            resources: vec![pb::OrganizationResource {
                r#type: "document".into(),
                id: "d1".into(),
                organization_id: "acme".into(),
            }],
            all_users: true,
        }
        .encode_to_vec(),
    ];
    for round in 0..ROUNDS {
        let data = if round % 2 == 0 {
            let mut data = seeds[round % seeds.len()].clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..data.len());
                match rng.random_range(0..3) {
                    0 => data[at] = rng.random(),
                    1 => data.insert(at, rng.random()),
                    _ => {
                        data.remove(at);
                        if data.is_empty() {
                            data.push(0);
                        }
                    }
                }
            }
            data
        } else {
            (0..rng.random_range(0..256)).map(|_| rng.random()).collect()
        };
        fuzzing::validate(&data);
    }
}
