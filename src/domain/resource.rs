use super::{OrganizationId, ResourceId, ResourceType};

/// What a grant applies to, inside one organization. For the organization itself,
/// `kind` is `organization` and `id` is the organization id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    pub kind: ResourceType,
    pub id: ResourceId,
}

impl Resource {
    pub fn organization(organization_id: &OrganizationId) -> Self {
        Self { kind: ResourceType::organization(), id: organization_id.clone().into() }
    }
}
