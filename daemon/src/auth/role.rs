//! Staff roles and what each may do: `admin ⊇ clinician ⊇ reception`. A role is checked by
//! [`Role::require`], whose refusal names the role needed (the 403's message). This module never
//! decides *which* role a route needs: the routes say that.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A staff member's or a token's role. The order is the inclusion: a higher role may do all that a
/// lower one may.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Checks, search, provisional records, the worklist, card readers.
    Reception,
    /// Reception's, and later medical information.
    Clinician,
    /// Everything, including export, users, tokens, outage declaration and the access log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Reception, Role::Clinician, Role::Admin];

    /// Whether this role may do what `needed` may.
    #[must_use]
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// `Ok` when this role may do what `needed` may, else the refusal naming `needed`.
    pub fn require(self, needed: Role) -> Result<(), Forbidden> {
        if self.allows(needed) {
            Ok(())
        } else {
            Err(Forbidden { needed })
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reception => "reception",
            Role::Clinician => "clinician",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A role name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role `{0}` is not one of reception, clinician, admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// Too little role for what was asked (HTTP 403 `forbidden`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this needs the {needed} role")]
pub struct Forbidden {
    pub needed: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_includes_the_lower_ones_and_not_the_higher() {
        use Role::*;
        let allowed: Vec<(Role, Role)> = Role::ALL
            .into_iter()
            .flat_map(|have| Role::ALL.into_iter().map(move |need| (have, need)))
            .filter(|(have, need)| have.allows(*need))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Reception, Reception),
                (Clinician, Reception),
                (Clinician, Clinician),
                (Admin, Reception),
                (Admin, Clinician),
                (Admin, Admin),
            ]
        );
    }

    #[test]
    fn a_refusal_names_the_role_needed() {
        let err = Role::Reception.require(Role::Admin).unwrap_err();
        assert_eq!(err.to_string(), "this needs the admin role");
        assert_eq!(Role::Admin.require(Role::Clinician), Ok(()));
    }

    #[test]
    fn roles_read_and_write_as_lower_case_words() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        assert_eq!(
            "Admin".parse::<Role>().unwrap_err().to_string(),
            "role `Admin` is not one of reception, clinician, admin"
        );
    }
}
