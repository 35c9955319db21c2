//! Identifiers as the contract defines them. A value of these types has been checked.

use std::fmt;

/// Why a string is not a valid identifier; the caller adds the field name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError(pub String);

const MAX_ID_BYTES: usize = 128;

/// 1-128 bytes of printable ASCII without spaces (organization, user and resource ids).
fn check_opaque_id(value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError("must not be empty".into()));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(IdError(format!("must be at most {MAX_ID_BYTES} bytes, got {}", value.len())));
    }
    if let Some(bad) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(IdError(format!("must be printable ASCII without spaces, found {bad:?}")));
    }
    Ok(())
}

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, IdError> {
                check_opaque_id(value).map(|()| Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    /// A tenant's id, chosen by the caller.
    OrganizationId
);
opaque_id!(
    /// An identity owned by an identity provider (`auth0|5f1c`, a UUID, ...).
    UserId
);
opaque_id!(
    /// The id of a resource inside an organization.
    ResourceId
);

impl From<OrganizationId> for ResourceId {
    fn from(id: OrganizationId) -> Self {
        Self(id.0)
    }
}

/// A catalog name: `[a-z0-9_.:-]{1,128}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PermissionName(String);

impl PermissionName {
    pub fn parse(value: &str) -> Result<Self, IdError> {
        if value.is_empty() || value.len() > MAX_ID_BYTES {
            return Err(IdError(format!("must be 1-{MAX_ID_BYTES} characters, got {}", value.len())));
        }
        let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | ':' | '-');
        if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
            return Err(IdError(format!("must match [a-z0-9_.:-]{{1,128}}, found {bad:?}")));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PermissionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `organization`, or a caller-defined type matching `[a-z][a-z0-9_]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceType(String);

impl ResourceType {
    pub const ORGANIZATION: &'static str = "organization";

    pub fn organization() -> Self {
        Self(Self::ORGANIZATION.to_owned())
    }

    pub fn parse(value: &str) -> Result<Self, IdError> {
        let mut chars = value.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !starts_with_letter || !rest_ok || value.len() > 64 {
            return Err(IdError("must match [a-z][a-z0-9_]{0,63}".into()));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn is_organization(&self) -> bool {
        self.0 == Self::ORGANIZATION
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text of at most 200 characters.
pub fn check_display_name(value: &str) -> Result<(), IdError> {
    check_text(value, 200)
}

/// Free text of at most 1024 characters.
pub fn check_description(value: &str) -> Result<(), IdError> {
    check_text(value, 1024)
}

fn check_text(value: &str, max_chars: usize) -> Result<(), IdError> {
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(IdError(format!("must be at most {max_chars} characters, got {chars}")));
    }
    if value.contains('\0') {
        return Err(IdError("must not contain NUL characters".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_ids_accept_idp_shapes_and_reject_spaces_and_overlong() {
        for ok in ["auth0|5f1c", "uaa-id-128", "3f1e5a4c-0b7d-4c43-9f53-2f1c3d4e5f60", "~"] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "é", "a\0b", &"x".repeat(129)] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn permission_names_and_resource_types_follow_their_patterns() {
        assert!(PermissionName::parse("documents:read").is_ok());
        assert!(PermissionName::parse("edit_org_users").is_ok());
        assert!(PermissionName::parse("Documents").is_err());
        assert!(ResourceType::parse("folder").is_ok());
        assert!(ResourceType::parse("9folder").is_err());
        assert!(ResourceType::parse(&"a".repeat(65)).is_err());
        assert!(check_display_name(&"é".repeat(200)).is_ok());
        assert!(check_display_name(&"é".repeat(201)).is_err());
    }
}
