//! Who holds which registry upload session: the repository it was opened in (it is usable
//! only there) and the caller that opened it, whose open sessions are capped, as are all of
//! them together, so that one pushing client cannot hold the daemon's descriptors and memory.
//!
//! Owns only this bookkeeping; the sessions' bytes are the blob store's. Must not call the
//! registry, storage or metadata.

use crate::auth::Principal;
use crate::storage::UploadId;
use ecrl::names::RepoName;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Whose sessions count together: a user (or the owner) wherever they connect from; callers
/// without credentials (`--anonymous all`) by their address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    Owner,
    User(Arc<str>),
    Anonymous(Option<IpAddr>),
}

impl Holder {
    pub fn new(principal: &Principal, client: Option<IpAddr>) -> Holder {
        match principal {
            Principal::Owner => Holder::Owner,
            Principal::User(user) => Holder::User(user.clone()),
            Principal::Anonymous => Holder::Anonymous(client),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Owner => f.write_str("the registry owner"),
            Holder::User(user) => write!(f, "user {user}"),
            Holder::Anonymous(Some(ip)) => write!(f, "anonymous clients at {ip}"),
            Holder::Anonymous(None) => f.write_str("anonymous clients"),
        }
    }
}

/// The caps on open sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_holder: usize,
    pub total: usize,
}

/// Why a session was not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "{holder} already has {open} upload sessions open, the most one caller may hold \
         (registry.max_uploads_per_client): finish or cancel some, or retry later"
    )]
    Holder { holder: Holder, open: usize },
    #[error(
        "the registry already has {open} upload sessions open, the most it holds \
         (registry.max_uploads): retry later"
    )]
    Total { open: usize },
}

#[derive(Default)]
struct Table {
    sessions: HashMap<UploadId, (RepoName, Holder)>,
    by_holder: HashMap<Holder, usize>,
}

/// The open sessions, by id.
pub struct Sessions {
    limits: Limits,
    table: Mutex<Table>,
}

impl Sessions {
    pub fn new(limits: Limits) -> Sessions {
        Sessions {
            limits,
            table: Mutex::new(Table::default()),
        }
    }

    /// Checks that `holder` may open another session (before the store makes one).
    pub fn admit(&self, holder: &Holder) -> Result<(), Refused> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        self.check(&table, holder)
    }

    /// Records a session the store opened. Checked again here, since two requests may have
    /// been admitted at once.
    pub fn open(&self, id: UploadId, repo: RepoName, holder: Holder) -> Result<(), Refused> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        self.check(&table, &holder)?;
        *table.by_holder.entry(holder.clone()).or_insert(0) += 1;
        table.sessions.insert(id, (repo, holder));
        Ok(())
    }

    /// Whether the caps leave room for one more session of `holder`.
    fn check(&self, table: &Table, holder: &Holder) -> Result<(), Refused> {
        let open = table.sessions.len();
        if open >= self.limits.total {
            return Err(Refused::Total { open });
        }
        let mine = table.by_holder.get(holder).copied().unwrap_or(0);
        if mine >= self.limits.per_holder {
            return Err(Refused::Holder {
                holder: holder.clone(),
                open: mine,
            });
        }
        Ok(())
    }

    /// True when the session was opened in `repo`.
    pub fn owned_by(&self, id: &UploadId, repo: &RepoName) -> bool {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.sessions.get(id).is_some_and(|(r, _)| r == repo)
    }

    /// Forgets a session (finished, cancelled, failed or expired).
    pub fn close(&self, id: &UploadId) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, holder)) = table.sessions.remove(id) {
            if let Some(n) = table.by_holder.get_mut(&holder) {
                *n -= 1;
                if *n == 0 {
                    table.by_holder.remove(&holder);
                }
            }
        }
    }

    /// Forgets every session for which `alive` is false.
    pub fn retain(&self, alive: impl Fn(&UploadId) -> bool) {
        let gone: Vec<UploadId> = {
            let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            table
                .sessions
                .keys()
                .filter(|id| !alive(id))
                .copied()
                .collect()
        };
        for id in gone {
            self.close(&id);
        }
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> UploadId {
        uuid::Uuid::new_v4().to_string().parse().unwrap()
    }

    #[test]
    fn sessions_are_capped_per_holder_and_in_total() {
        let sessions = Sessions::new(Limits {
            per_holder: 2,
            total: 3,
        });
        let repo: RepoName = "team/app".parse().unwrap();
        let alice = Holder::User("alice".into());
        let bob = Holder::User("bob".into());
        let (a1, a2) = (id(), id());
        sessions.open(a1, repo.clone(), alice.clone()).unwrap();
        sessions.open(a2, repo.clone(), alice.clone()).unwrap();
        assert!(matches!(
            sessions.admit(&alice),
            Err(Refused::Holder { open: 2, .. })
        ));
        assert!(sessions.open(id(), repo.clone(), alice.clone()).is_err());
        // Another caller is not held back by alice's sessions, until the total is reached.
        let b1 = id();
        sessions.open(b1, repo.clone(), bob.clone()).unwrap();
        assert_eq!(sessions.admit(&bob), Err(Refused::Total { open: 3 }));
        // Closing frees a place for its holder, once.
        sessions.close(&a1);
        sessions.close(&a1);
        assert_eq!(sessions.len(), 2);
        sessions.admit(&alice).unwrap();
        assert!(sessions.owned_by(&a2, &repo));
        assert!(!sessions.owned_by(&a2, &"team/other".parse().unwrap()));
        sessions.retain(|id| *id == b1);
        assert_eq!(sessions.len(), 1);
        sessions.admit(&alice).unwrap();
        assert!(!sessions.owned_by(&a2, &repo));
    }

    #[test]
    fn anonymous_callers_count_by_address() {
        let a = Holder::new(&Principal::Anonymous, Some([127, 0, 0, 1].into()));
        let b = Holder::new(&Principal::Anonymous, Some([127, 0, 0, 2].into()));
        assert_ne!(a, b);
        assert_eq!(
            Holder::new(&Principal::User("u".into()), Some([127, 0, 0, 1].into())),
            Holder::new(&Principal::User("u".into()), Some([127, 0, 0, 2].into()))
        );
    }
}
