//! Request validation: collects every rejected field of a request, so one answer names
//! all that is wrong instead of one problem per round trip.

use std::collections::HashSet;

use uuid::Uuid;

use super::pb;
use crate::domain::{
    Error, FieldViolation, IdError, MAX_BATCH, OrganizationId, PermissionName, Resource, ResourceId, ResourceType,
    commands::{PermissionRef, PermissionRefs},
    page::Page,
};

/// A hostile request may hold many bad entries; a client needs the first few.
const MAX_REPORTED: usize = 20;

#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.0.len() < MAX_REPORTED {
            self.0.push(FieldViolation::new(field, description));
        }
    }

    /// Parses one field, recording why it is rejected.
    pub fn parse<T>(&mut self, field: &str, value: &str, parse: impl FnOnce(&str) -> Result<T, IdError>) -> Option<T> {
        parse(value).map_err(|IdError(why)| self.add(field, why)).ok()
    }

    pub fn page(&mut self, page_size: i32, page_token: &str) -> Option<Page> {
        Page::parse(page_size, page_token).map_err(|v| self.add(v.field, v.description)).ok()
    }

    /// An optional organization filter: `Some(None)` when empty, `None` when malformed.
    pub fn optional_organization(&mut self, field: &str, value: &str) -> Option<Option<OrganizationId>> {
        if value.is_empty() { Some(None) } else { self.parse(field, value, OrganizationId::parse).map(Some) }
    }

    /// A UUID in the one form grantd writes them (lowercase `8-4-4-4-12`): the braced,
    /// `urn:uuid:`, unhyphenated and uppercase spellings would name one permission several
    /// ways.
    pub fn uuid(&mut self, field: &str, value: &str) -> Option<Uuid> {
        Uuid::try_parse(value)
            .ok()
            .filter(|uuid| uuid.hyphenated().encode_lower(&mut Uuid::encode_buffer()) == value)
            .or_else(|| {
                self.add(field, "must be a UUID in lowercase 8-4-4-4-12 form");
                None
            })
    }

    pub fn text(&mut self, field: &str, value: &str, check: impl FnOnce(&str) -> Result<(), IdError>) {
        if let Err(IdError(why)) = check(value) {
            self.add(field, why);
        }
    }

    /// `Ok` when nothing was rejected.
    pub fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::InvalidArgument(self.0)) }
    }

    /// The first rejected field, if any (one record of a batch is rejected for one reason).
    pub fn into_first(self) -> Option<FieldViolation> {
        self.0.into_iter().next()
    }

    /// The error for a request some of whose fields did not parse.
    pub fn into_error(self) -> Error {
        if self.0.is_empty() {
            Error::Internal("a field failed to parse without a recorded reason".into())
        } else {
            Error::InvalidArgument(self.0)
        }
    }

    /// `permission_ids` and `permission_names`: 1..=MAX_BATCH distinct entries together
    /// (duplicates count once; the message size limit bounds the raw lists).
    pub fn permission_refs(&mut self, ids: &[String], names: &[String]) -> Option<PermissionRefs> {
        let total = ids.len() + names.len();
        if total == 0 {
            self.add("permission_ids", "name at least one permission in permission_ids or permission_names");
            return None;
        }
        let mut refs = PermissionRefs { ids: Vec::with_capacity(ids.len()), names: Vec::with_capacity(names.len()) };
        let mut ok = true;
        let mut seen_ids = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            match self.uuid(&format!("permission_ids[{i}]"), id) {
                Some(id) if seen_ids.insert(id) => refs.ids.push(id),
                Some(_) => {}
                None => ok = false,
            }
        }
        let mut seen_names = HashSet::new();
        for (i, name) in names.iter().enumerate() {
            match self.parse(&format!("permission_names[{i}]"), name, PermissionName::parse) {
                Some(name) if seen_names.insert(name.clone()) => refs.names.push(name),
                Some(_) => {}
                None => ok = false,
            }
        }
        let distinct = refs.ids.len() + refs.names.len();
        if distinct > MAX_BATCH {
            self.add("permission_ids", format!("at most {MAX_BATCH} distinct permissions per request, got {distinct}"));
            return None;
        }
        ok.then_some(refs)
    }

    /// A `oneof permission { permission_id | permission_name }`.
    pub fn permission_ref(
        &mut self,
        id_field: &str,
        name_field: &str,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Option<PermissionRef> {
        match (id, name) {
            (Some(id), _) => self.uuid(id_field, id).map(PermissionRef::Id),
            (None, Some(name)) => self.parse(name_field, name, PermissionName::parse).map(PermissionRef::Name),
            (None, None) => {
                self.add(id_field, format!("set {id_field} or {name_field}"));
                None
            }
        }
    }

    /// A resource of `organization`, which is the organization itself when absent.
    pub fn resource(
        &mut self,
        field: &str,
        resource: Option<&pb::Resource>,
        organization: Option<&OrganizationId>,
    ) -> Option<Resource> {
        let Some(resource) = resource else {
            return organization.map(Resource::organization);
        };
        self.resource_in(field, &resource.r#type, &resource.id, organization)
    }

    /// `{type, id}` inside `organization`; for `type = organization` the id is empty or
    /// the organization's own.
    pub fn resource_in(
        &mut self,
        field: &str,
        kind: &str,
        id: &str,
        organization: Option<&OrganizationId>,
    ) -> Option<Resource> {
        let kind = self.parse(&format!("{field}.type"), kind, ResourceType::parse)?;
        if kind.is_organization() {
            let organization = organization?;
            if !id.is_empty() && id != organization.as_str() {
                self.add(format!("{field}.id"), "must be empty or the organization id when type is organization");
                return None;
            }
            return Some(Resource::organization(organization));
        }
        let id = self.parse(&format!("{field}.id"), id, ResourceId::parse)?;
        Some(Resource { kind, id })
    }
}
