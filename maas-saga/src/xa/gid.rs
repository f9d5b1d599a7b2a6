//! Global transaction ids: `maas:<coordinator>:<transaction>:<branch>`.
//!
//! Each part is escaped (`%` → `%25`, `:` → `%3A`, `'` → `%27`), so the id splits back into
//! its parts whatever the names hold and can be quoted as a SQL literal (`PREPARE
//! TRANSACTION` takes no parameters). PostgreSQL limits a gid to 199 bytes.

use crate::SagaId;

/// What every gid this crate prepares starts with.
pub(crate) const PREFIX: &str = "maas:";

/// PostgreSQL's limit on a prepared transaction's id, in bytes.
pub(crate) const MAX_LEN: usize = 199;

/// A branch's global transaction id, and the parts it was made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gid {
    /// The engine that prepared it (its lease owner name).
    pub(crate) coordinator: String,
    /// The transaction.
    pub(crate) saga: SagaId,
    /// The branch name within the transaction.
    pub(crate) branch: String,
}

impl Gid {
    pub(crate) fn new(coordinator: &str, saga: &SagaId, branch: &str) -> Self {
        Gid {
            coordinator: coordinator.to_owned(),
            saga: saga.clone(),
            branch: branch.to_owned(),
        }
    }

    /// The id as stored by PostgreSQL, or `None` when it would be longer than it allows.
    pub(crate) fn encode(&self) -> Option<String> {
        let gid = format!(
            "{PREFIX}{}:{}:{}",
            escape(&self.coordinator),
            escape(self.saga.as_str()),
            escape(&self.branch)
        );
        (gid.len() <= MAX_LEN).then_some(gid)
    }

    /// The parts of a gid made by [`encode`](Gid::encode); `None` for anyone else's.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn parse(gid: &str) -> Option<Self> {
        let mut parts = gid.strip_prefix(PREFIX)?.split(':');
        let (c, s, b) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(Gid {
            coordinator: unescape(c)?,
            saga: SagaId::from(unescape(s)?),
            branch: unescape(b)?,
        })
    }
}

fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            '\'' => out.push_str("%27"),
            c => out.push(c),
        }
    }
    out
}

#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn unescape(part: &str) -> Option<String> {
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "25" => '%',
            "3A" => ':',
            "27" => '\'',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_whatever_the_names_hold() {
        for (c, s, b) in [
            ("pod-1", "0190-abc", "models"),
            ("a:b", "it's", "50%:'x'"),
            ("", "", ""),
            ("%3A", "%", "::"),
        ] {
            let gid = Gid::new(c, &SagaId::from(s), b);
            let text = gid.encode().unwrap();
            assert!(!text[PREFIX.len()..].contains('\''), "{text}");
            assert_eq!(Gid::parse(&text), Some(gid), "{text}");
        }
    }

    #[test]
    fn refuses_what_postgres_would_refuse_and_ids_that_are_not_ours() {
        let long = "x".repeat(MAX_LEN);
        assert_eq!(
            Gid::new("e", &SagaId::from(long.as_str()), "b").encode(),
            None
        );
        for other in [
            "",
            "maas:",
            "maas:a:b",
            "maas:a:b:c:d",
            "dtm:a:b:c",
            "maas:%zz:b:c",
        ] {
            assert_eq!(Gid::parse(other), None, "{other}");
        }
    }
}
