//! grantd's JSON lines: one object per line with one key saying what it is. `grantd
//! export` writes them, `grantd import` reads them (docs/bulk.md shows every kind).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    api::{
        convert::{time_from_wire, timestamp},
        pb::{self, bulk_record::Record},
    },
    domain::{IdError, OrganizationId, PermissionName, ResourceId, ResourceType, UserId},
};

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    /// The first line of an export: where and when it was taken. Import skips it.
    Export(ExportHeader),
    Organization(OrganizationLine),
    Permission(PermissionLine),
    Membership(MembershipLine),
    Grant(GrantLine),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationLine {
    pub id: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionLine {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipLine {
    pub organization_id: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantLine {
    pub organization_id: String,
    pub user_id: String,
    /// The permission's catalog name.
    pub permission: String,
    /// Absent for the whole organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLine {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// Why a line cannot be imported: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() { write!(f, "{}", self.reason) } else { write!(f, "{}: {}", self.field, self.reason) }
    }
}

/// Reads one line: `Ok(None)` for an export header, a blank line or a line of spaces.
pub fn parse(text: &str) -> Result<Option<pb::BulkRecord>, BadLine> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let line: Line =
        serde_json::from_str(text).map_err(|err| BadLine { field: String::new(), reason: json_reason(&err) })?;
    record(line)
}

/// The record a line stands for, its fields checked; `Ok(None)` for an export header.
pub fn record(line: Line) -> Result<Option<pb::BulkRecord>, BadLine> {
    line.validate()?;
    Ok(line.into_record())
}

/// serde's message without its position (the caller names the line).
fn json_reason(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

fn check(field: &str, value: &str, parse: impl FnOnce(&str) -> Result<(), IdError>) -> Result<(), BadLine> {
    parse(value).map_err(|IdError(reason)| BadLine { field: field.to_owned(), reason })
}

fn organization_id(value: &str) -> Result<(), IdError> {
    OrganizationId::parse(value).map(drop)
}

fn user_id(value: &str) -> Result<(), IdError> {
    UserId::parse(value).map(drop)
}

impl Line {
    /// The checks the server would make of the record's own fields, so that a bad line
    /// is named by its number before anything of its batch is sent.
    fn validate(&self) -> Result<(), BadLine> {
        match self {
            Line::Export(_) => Ok(()),
            Line::Organization(o) => check("organization.id", &o.id, organization_id),
            Line::Permission(p) => check("permission.name", &p.name, |v| PermissionName::parse(v).map(drop)),
            Line::Membership(m) => {
                check("membership.organization_id", &m.organization_id, organization_id)?;
                check("membership.user_id", &m.user_id, user_id)?;
                m.added_by.as_deref().map_or(Ok(()), |by| check("membership.added_by", by, user_id))
            }
            Line::Grant(g) => {
                check("grant.organization_id", &g.organization_id, organization_id)?;
                check("grant.user_id", &g.user_id, user_id)?;
                check("grant.permission", &g.permission, |v| PermissionName::parse(v).map(drop))?;
                if let Some(resource) = &g.resource {
                    check("grant.resource.type", &resource.kind, |v| ResourceType::parse(v).map(drop))?;
                    if resource.kind != ResourceType::ORGANIZATION {
                        check("grant.resource.id", &resource.id, |v| ResourceId::parse(v).map(drop))?;
                    }
                }
                g.granted_by.as_deref().map_or(Ok(()), |by| check("grant.granted_by", by, user_id))
            }
        }
    }

    fn into_record(self) -> Option<pb::BulkRecord> {
        let record = match self {
            Line::Export(_) => return None,
            Line::Organization(o) => Record::Organization(pb::Organization {
                id: o.id,
                display_name: o.display_name,
                created_at: o.created_at.and_then(timestamp),
            }),
            Line::Permission(p) => Record::Permission(pb::Permission {
                name: p.name,
                description: p.description,
                created_at: p.created_at.and_then(timestamp),
                ..Default::default()
            }),
            Line::Membership(m) => Record::Membership(pb::Membership {
                organization_id: m.organization_id,
                user_id: m.user_id,
                added_at: m.added_at.and_then(timestamp),
                added_by: m.added_by.unwrap_or_default(),
            }),
            Line::Grant(g) => Record::Grant(pb::Grant {
                organization_id: g.organization_id,
                user_id: g.user_id,
                permission_name: g.permission,
                resource: g.resource.map(|r| pb::Resource { r#type: r.kind, id: r.id }),
                granted_at: g.granted_at.and_then(timestamp),
                granted_by: g.granted_by.unwrap_or_default(),
                ..Default::default()
            }),
        };
        Some(pb::BulkRecord { record: Some(record) })
    }

    /// The line for an exported record.
    pub fn from_record(record: pb::BulkRecord) -> Option<Line> {
        Some(match record.record? {
            Record::Organization(o) => Line::Organization(OrganizationLine {
                id: o.id,
                display_name: o.display_name,
                created_at: o.created_at.as_ref().and_then(time_from_wire),
            }),
            Record::Permission(p) => Line::Permission(PermissionLine {
                name: p.name,
                description: p.description,
                created_at: p.created_at.as_ref().and_then(time_from_wire),
            }),
            Record::Membership(m) => Line::Membership(MembershipLine {
                organization_id: m.organization_id,
                user_id: m.user_id,
                added_at: m.added_at.as_ref().and_then(time_from_wire),
                added_by: Some(m.added_by).filter(|by| !by.is_empty()),
            }),
            Record::Grant(g) => {
                // An org-wide grant is written without a resource, as a person would.
                let resource = g
                    .resource
                    .filter(|r| r.r#type != ResourceType::ORGANIZATION)
                    .map(|r| ResourceLine { kind: r.r#type, id: r.id });
                Line::Grant(GrantLine {
                    organization_id: g.organization_id,
                    user_id: g.user_id,
                    permission: g.permission_name,
                    resource,
                    granted_at: g.granted_at.as_ref().and_then(time_from_wire),
                    granted_by: Some(g.granted_by).filter(|by| !by.is_empty()),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_line_reads_and_writes_back_the_same() {
        let lines = [
            r#"{"organization":{"id":"acme","display_name":"Acme Inc.","created_at":"2026-12-06T07:22:31.283043Z"}}"#,
            r#"{"permission":{"name":"documents:read","description":"Read documents"}}"#,
            r#"{"membership":{"organization_id":"acme","user_id":"auth0|alice","added_by":"root"}}"#,
            r#"{"grant":{"organization_id":"acme","user_id":"auth0|alice","permission":"documents:read","resource":{"type":"folder","id":"f1"},"granted_by":"root"}}"#,
            r#"{"grant":{"organization_id":"acme","user_id":"auth0|alice","permission":"documents:read"}}"#,
        ];
        for text in lines {
            let record = parse(text).expect("a good line").expect("a record");
            let back = serde_json::to_string(&Line::from_record(record).expect("a line")).expect("json");
            assert_eq!(back, text);
        }
        assert_eq!(parse(r#"{"export":{"revision":7}}"#), Ok(None));
        assert_eq!(parse("   "), Ok(None));
    }

    #[test]
    fn a_bad_line_names_its_field() {
        let bad = |text: &str| parse(text).expect_err("a bad line").to_string();
        assert_eq!(
            bad(r#"{"grant":{"organization_id":"acme","user_id":"","permission":"documents:read"}}"#),
            "grant.user_id: must not be empty"
        );
        assert!(
            bad(r#"{"grant":{"organization_id":"acme","usr":"a","permission":"p"}}"#).contains("unknown field `usr`")
        );
        assert!(bad(r#"{"grant":{"organization_id":"acme","permission":"p"}}"#).contains("missing field `user_id`"));
        assert!(bad(r#"{"role":{}}"#).contains("unknown variant `role`"));
        assert!(bad("{not json").starts_with("key must be a string"));
    }
}
