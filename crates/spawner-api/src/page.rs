//! Lists come in pages: `?limit=` records at most (and a few MiB at most, whatever the
//! records hold), and the answer's `next` is the cursor of the page after it, passed back
//! as `?after=`. An answer without `next` is the last page. A list of every backend ever
//! kept was one answer of any size (525 MB for 500 records of a 1 MiB spec).

use crate::ApiError;
use crate::ErrorCode;

/// Records in a page when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// The most records a page holds, whatever `limit` asks.
pub const MAX_LIMIT: usize = 1000;
/// A page ends early once its records hold about this many bytes (it holds at least one):
/// a thousand records of the largest specs the limits allow would be over 100 MiB.
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// Which page a list request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// At most this many records.
    pub limit: usize,
    /// The `next` of the previous page (what it means is the server's own).
    pub after: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

impl PageRequest {
    /// Takes `limit` or `after` from a query pair: `Ok(false)` for any other name.
    pub fn read(&mut self, name: &str, value: &str) -> Result<bool, ApiError> {
        match name {
            "limit" => {
                self.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            ErrorCode::InvalidQuery,
                            format!(
                                "limit: {value:?} must be a number of records from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}); follow \"next\" for more"
                            ),
                        )
                    })?;
                Ok(true)
            }
            "after" => {
                if value.is_empty() {
                    return Err(bad_cursor());
                }
                self.after = Some(value.to_string());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// A request of only `limit` and `after` (the pools list).
    pub fn from_query(params: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut page = PageRequest::default();
        for (name, value) in params {
            if !page.read(&name, &value)? {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    format!("unknown parameter {name:?}: use limit or after"),
                ));
            }
        }
        Ok(page)
    }
}

/// The answer to an `after` that is not a cursor this server gave.
pub fn bad_cursor() -> ApiError {
    ApiError::bad_request(
        ErrorCode::InvalidQuery,
        "after: not a cursor of this list; pass the \"next\" of the previous page as it was given, or leave \"after\" out for the first page",
    )
}

/// Where a backend stands in the list's order (newest first: `created_at` descending, then
/// `id` ascending), as a cursor gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPosition {
    pub created_at: i64,
    pub id: String,
}

impl ListPosition {
    /// The cursor of a page that ends here: opaque to clients.
    pub fn cursor(&self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }

    /// The position a cursor of [`ListPosition::cursor`] names.
    pub fn from_cursor(cursor: &str) -> Result<Self, ApiError> {
        let (time, id) = cursor.split_once('.').ok_or_else(bad_cursor)?;
        // Any object name, not only a Spawner id: on Kubernetes a SessionLivedBackend may
        // be created by hand (`kubectl apply`), under a name of its own, and a page may end
        // on it. A DNS subdomain's characters, at most its length.
        let named = !id.is_empty()
            && id.len() <= 253
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !named {
            return Err(bad_cursor());
        }
        Ok(ListPosition {
            created_at: time.parse().map_err(|_| bad_cursor())?,
            id: id.to_string(),
        })
    }

    /// Whether a backend at `self` comes after `other` in the list.
    pub fn is_after(&self, other: &ListPosition) -> bool {
        (std::cmp::Reverse(self.created_at), &self.id)
            > (std::cmp::Reverse(other.created_at), &other.id)
    }
}

/// A page being filled: records are offered in the list's order until it is full.
#[derive(Debug)]
pub struct Page<T> {
    limit: usize,
    bytes: usize,
    pub items: Vec<T>,
}

impl<T> Page<T> {
    pub fn new(request: &PageRequest) -> Self {
        Page {
            limit: request.limit.clamp(1, MAX_LIMIT),
            bytes: 0,
            items: Vec::new(),
        }
    }

    /// Whether the page takes no more: `limit` records, or [`MAX_PAGE_BYTES`].
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.limit || self.bytes >= MAX_PAGE_BYTES
    }

    /// Adds a record of about `bytes` bytes.
    pub fn push(&mut self, item: T, bytes: usize) {
        self.items.push(item);
        self.bytes += bytes;
    }

    /// How many more records the page takes by count.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_and_after_are_read_and_checked() {
        let mut page = PageRequest::default();
        assert_eq!(page.limit, DEFAULT_LIMIT);
        assert!(page.read("limit", "5").unwrap());
        assert!(page.read("after", "x").unwrap());
        assert_eq!((page.limit, page.after.as_deref()), (5, Some("x")));
        assert!(!page.read("state", "Ready").unwrap());
        for bad in ["0", "1001", "-1", "many"] {
            let e = page.read("limit", bad).unwrap_err();
            assert!(e.message.starts_with("limit:"), "{}", e.message);
        }
        assert!(page.read("after", "").is_err());
        assert!(PageRequest::from_query(vec![("colour".into(), "red".into())]).is_err());
    }

    #[test]
    fn a_page_is_full_by_count_or_by_bytes() {
        let mut page = Page::new(&PageRequest {
            limit: 2,
            after: None,
        });
        page.push(1, 10);
        assert!(!page.is_full());
        page.push(2, 10);
        assert!(page.is_full());
        let mut big = Page::new(&PageRequest::default());
        big.push(1, MAX_PAGE_BYTES);
        assert!(big.is_full());
        assert_eq!(big.room(), DEFAULT_LIMIT - 1);
    }

    #[test]
    fn a_cursor_names_any_object_name_and_nothing_else() {
        for id in [
            "k3v5q7xw2mzbaaaaaaaaaaaaaa",
            "bare-00001",
            "my-notebook.team-a",
        ] {
            let at = ListPosition {
                created_at: 1_700_000_000_000,
                id: id.to_string(),
            };
            assert_eq!(ListPosition::from_cursor(&at.cursor()).ok(), Some(at));
        }
        for bad in ["", "17", "x.abc", "17.", "17.Upper", "17.a/b", "17.a b"] {
            assert!(ListPosition::from_cursor(bad).is_err(), "{bad}");
        }
    }
}
