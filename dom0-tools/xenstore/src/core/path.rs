//! Path rules: canonical form, relative paths, parents and prefixes.

use crate::wire::{Errno, ABS_PATH_MAX, REL_PATH_MAX};

/// `/local/domain/<domid>`, a domain's home (and base for its relative paths).
pub fn home(domid: u16) -> String {
    format!("/local/domain/{domid}")
}

fn valid_chars(p: &str) -> bool {
    p.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b))
}

/// Turns a path as sent by domain `domid` into an absolute, validated node path.
///
/// `path_quota` limits unprivileged callers: the part below their home (or the whole path when
/// outside it) may be at most that long. Bad syntax or length is `EINVAL`, as in Xen.
pub fn canonicalize(domid: u16, raw: &[u8], path_quota: Option<usize>) -> Result<String, Errno> {
    let s = std::str::from_utf8(raw).map_err(|_| Errno::EINVAL)?;
    if s.is_empty() {
        return Err(Errno::EINVAL);
    }
    let abs = if s.starts_with('/') {
        s.to_owned()
    } else if s.starts_with('@') {
        return Err(Errno::EINVAL);
    } else {
        if s.len() > REL_PATH_MAX {
            return Err(Errno::EINVAL);
        }
        format!("{}/{s}", home(domid))
    };
    if abs.len() > ABS_PATH_MAX
        || !valid_chars(&abs)
        || abs.contains("//")
        || (abs.len() > 1 && abs.ends_with('/'))
    {
        return Err(Errno::EINVAL);
    }
    if let Some(q) = path_quota {
        let h = home(domid);
        let local = match abs.strip_prefix(&h) {
            Some(rest) if rest.starts_with('/') => rest.len() - 1,
            _ => abs.len(),
        };
        if local > q {
            return Err(Errno::EINVAL);
        }
    }
    Ok(abs)
}

/// Whether `name` is a valid special (`@...`) watch path.
pub fn valid_special(name: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(name).ok()?;
    (s.starts_with('@') && s.len() > 1 && s.len() <= REL_PATH_MAX && valid_chars(s))
        .then(|| s.to_owned())
}

/// The parent of an absolute path (`None` for `/`).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    let i = path.rfind('/')?;
    Some(if i == 0 { "/" } else { &path[..i] })
}

/// The last component.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `parent/child` for absolute `parent`.
pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// Whether `path` is `ancestor` or below it.
pub fn is_at_or_below(path: &str, ancestor: &str) -> bool {
    if ancestor == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(ancestor) {
        Some("") => true,
        Some(rest) => rest.starts_with('/'),
        None => false,
    }
}

/// The path as a relative watch of domain `domid` reports it.
pub fn relativize(path: &str, domid: u16) -> String {
    let h = home(domid);
    match path.strip_prefix(&h) {
        Some(rest) if rest.starts_with('/') => rest[1..].to_owned(),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(
            canonicalize(3, b"x/y", None).unwrap(),
            "/local/domain/3/x/y"
        );
        assert_eq!(canonicalize(3, b"/tool", None).unwrap(), "/tool");
        assert_eq!(canonicalize(3, b"/", None).unwrap(), "/");
        for bad in [
            &b""[..],
            b"/a//b",
            b"/a/",
            b"/a b",
            b"@introduceDomain",
            b"/a\xff",
            b"/a\0b",
        ] {
            assert_eq!(canonicalize(0, bad, None), Err(Errno::EINVAL), "{bad:?}");
        }
        let long = format!("/{}", "a".repeat(ABS_PATH_MAX));
        assert_eq!(canonicalize(0, long.as_bytes(), None), Err(Errno::EINVAL));
        let rel = "a".repeat(REL_PATH_MAX + 1);
        assert_eq!(canonicalize(0, rel.as_bytes(), None), Err(Errno::EINVAL));
        // The unprivileged quota counts below the home only.
        let ok = "b".repeat(100);
        assert!(canonicalize(4, ok.as_bytes(), Some(100)).is_ok());
        assert_eq!(
            canonicalize(4, format!("{ok}c").as_bytes(), Some(100)),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn parents_and_prefixes() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(basename("/a/bc"), "bc");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(is_at_or_below("/a", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
        assert!(is_at_or_below("/x", "/"));
        assert!(!is_at_or_below("@releaseDomain", "/"));
        assert_eq!(relativize("/local/domain/7/device/vif", 7), "device/vif");
        assert_eq!(relativize("/local/domain/70/x", 7), "/local/domain/70/x");
    }
}
