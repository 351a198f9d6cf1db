//! Node permissions.
//!
//! A node's permission list is never empty. The first entry names the owner, who always has full
//! access, and gives the access of every domain not listed later. Later entries give the access
//! of one domain each. The string form is a letter (`n` none, `r` read, `w` write, `b` both) and
//! a decimal domid: `b0`, `r1`.

use std::fmt;
use std::str::FromStr;

/// What a domain may do with a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// Read is allowed.
    pub fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }

    /// Write is allowed.
    pub fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }

    /// The letter.
    pub fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }

    /// The access for a letter.
    pub fn from_letter(c: u8) -> Option<Access> {
        match c {
            b'n' => Some(Access::None),
            b'r' => Some(Access::Read),
            b'w' => Some(Access::Write),
            b'b' => Some(Access::Both),
            _ => None,
        }
    }
}

/// One permission entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain.
    pub domid: u16,
    /// Its access.
    pub access: Access,
}

impl Perm {
    /// An entry.
    pub fn new(domid: u16, access: Access) -> Perm {
        Perm { domid, access }
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid)
    }
}

/// A permission string that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadPerm(pub String);

impl fmt::Display for BadPerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid permission {:?} (want n|r|w|b followed by a domid)",
            self.0
        )
    }
}

impl std::error::Error for BadPerm {}

impl FromStr for Perm {
    type Err = BadPerm;

    fn from_str(s: &str) -> Result<Perm, BadPerm> {
        Perm::parse(s.as_bytes()).ok_or_else(|| BadPerm(s.to_owned()))
    }
}

impl Perm {
    /// Parses the wire form (`b0`).
    pub fn parse(b: &[u8]) -> Option<Perm> {
        let (&letter, digits) = b.split_first()?;
        let access = Access::from_letter(letter)?;
        if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let domid: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        Some(Perm {
            domid: u16::try_from(domid).ok()?,
            access,
        })
    }
}

/// The access `domid` has under `perms` (not counting privilege: callers handle dom0).
pub fn access_for(perms: &[Perm], domid: u16) -> Access {
    let Some(owner) = perms.first() else {
        return Access::None;
    };
    if owner.domid == domid {
        return Access::Both;
    }
    perms[1..]
        .iter()
        .find(|p| p.domid == domid)
        .map_or(owner.access, |p| p.access)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        assert_eq!("b0".parse::<Perm>().unwrap(), Perm::new(0, Access::Both));
        assert_eq!(
            "r65535".parse::<Perm>().unwrap(),
            Perm::new(65535, Access::Read)
        );
        assert_eq!(Perm::new(3, Access::Write).to_string(), "w3");
        for bad in ["", "b", "x1", "r-1", "r65536", "r1a", "rr1"] {
            assert!(bad.parse::<Perm>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn owner_default_and_listed_domains() {
        let p = [
            Perm::new(5, Access::None),
            Perm::new(7, Access::Read),
            Perm::new(8, Access::Write),
        ];
        assert_eq!(access_for(&p, 5), Access::Both);
        assert_eq!(access_for(&p, 7), Access::Read);
        assert_eq!(access_for(&p, 8), Access::Write);
        assert_eq!(access_for(&p, 9), Access::None);
        let q = [Perm::new(0, Access::Read)];
        assert!(access_for(&q, 9).can_read());
        assert!(!access_for(&q, 9).can_write());
    }
}
