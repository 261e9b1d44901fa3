//! Finding items in a big batch: which items a page asks for ([`ItemQuery`]), one page of them
//! as the server answers ([`ItemsPage`]), and that page kept live in the browser as change
//! events arrive ([`Window`]). A page never holds more than one page of items, whatever the
//! batch's size, and an event costs it work in proportion to the items the event names.

use serde::{Deserialize, Serialize};

use crate::{ItemId, ItemProgress, ItemStatus};

/// Which of a batch's items to list: `GET /api/batches/{id}/items?status=&q=&after=&limit=`,
/// and the view of the batch page (`/batches/{id}?status=failed&q=invoice`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ItemQuery {
    /// Only items in this status.
    pub status: Option<ItemStatus>,
    /// Only items whose name contains this (letters A–Z matched in either case).
    #[cfg_attr(feature = "ssr", param(max_length = 200))]
    pub q: Option<String>,
    /// The `next` of the previous page: items after this position.
    #[cfg_attr(feature = "ssr", param(format = Int64, maximum = 4_294_967_295.0))]
    pub after: Option<u32>,
    /// The `prev` of the following page: the items just before this position.
    #[cfg_attr(feature = "ssr", param(format = Int64, maximum = 4_294_967_295.0))]
    pub before: Option<u32>,
    /// At most this many (1 to 500; larger asks get 500; 100 when absent).
    #[cfg_attr(feature = "ssr", param(format = Int64, maximum = 4_294_967_295.0))]
    pub limit: Option<u32>,
}

impl ItemQuery {
    pub const MAX_LIMIT: u32 = 500;
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_Q_CHARS: usize = 200;

    /// The page size to read: `limit` within 1 and [`Self::MAX_LIMIT`].
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(Self::DEFAULT_LIMIT).clamp(1, Self::MAX_LIMIT)
    }

    /// Checks the search text (at most [`Self::MAX_Q_CHARS`] characters) and that at most
    /// one cursor is given. An empty search is no search.
    pub fn validate(mut self) -> Result<Self, crate::Error> {
        if self.q.as_deref().is_some_and(str::is_empty) {
            self.q = None;
        }
        match &self.q {
            Some(q) if q.chars().count() > Self::MAX_Q_CHARS => {
                Err(crate::Error::Invalid(format!("q must be at most {} characters", Self::MAX_Q_CHARS)))
            }
            _ if self.after.is_some() && self.before.is_some() => {
                Err(crate::Error::Invalid("give after or before, not both".into()))
            }
            _ => Ok(self),
        }
    }

    /// Whether `item` passes the filter and the search (cursors aside): the same rule as the
    /// server's SQL, ASCII letters in either case.
    pub fn matches(&self, item: &ItemProgress) -> bool {
        self.status.is_none_or(|status| status == item.status)
            && self.q.as_deref().is_none_or(|q| contains_ignoring_ascii_case(&item.name, q))
    }

    /// The same view from its first page.
    pub fn first_page(&self) -> Self {
        Self { after: None, before: None, ..self.clone() }
    }

    /// The view a batch page's URL asks for (`?status=failed&q=invoice&after=120`), from a
    /// lookup of its query's keys. A value that does not parse is left out: a hand-edited link
    /// still shows a page. The page size is always the default.
    pub fn from_url(get: impl Fn(&str) -> Option<String>) -> Self {
        let number = |key| get(key).and_then(|v| v.parse().ok());
        Self {
            status: get("status").and_then(|v| v.parse().ok()),
            q: get("q").filter(|q| !q.is_empty() && q.chars().count() <= Self::MAX_Q_CHARS),
            after: number("after"),
            before: number("before").filter(|_| get("after").is_none()),
            limit: None,
        }
    }

    /// The query string of this view for a page's URL, without the `?`; empty for the first
    /// page of every item.
    pub fn to_url(&self) -> String {
        let mut url = form_urlencoded::Serializer::new(String::new());
        if let Some(status) = self.status {
            url.append_pair("status", status.as_str());
        }
        if let Some(q) = &self.q {
            url.append_pair("q", q);
        }
        if let Some(after) = self.after {
            url.append_pair("after", &after.to_string());
        }
        if let Some(before) = self.before {
            url.append_pair("before", &before.to_string());
        }
        url.finish()
    }
}

fn contains_ignoring_ascii_case(text: &str, part: &str) -> bool {
    let (text, part) = (text.as_bytes(), part.as_bytes());
    part.is_empty() || text.windows(part.len()).any(|window| window.eq_ignore_ascii_case(part))
}

/// One page of a batch's items, in order. `next` is the `after` of the following page and
/// `prev` the `before` of the preceding one, each absent when there is no such page. `seq` is
/// the batch's `seq` read before the items: they are at least that new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ItemsPage {
    pub items: Vec<ItemProgress>,
    pub next: Option<u32>,
    pub prev: Option<u32>,
    pub seq: u64,
}

/// A row of a [`Window`]: an item, or what a page shows of one.
pub trait Row {
    fn id(&self) -> ItemId;
    fn position(&self) -> u32;
}

impl Row for ItemProgress {
    fn id(&self) -> ItemId {
        self.id
    }

    fn position(&self) -> u32 {
        self.position
    }
}

/// A page of items kept live: its rows in position order and the positions it covers. The
/// cursors of the page it was read from are its bounds: `next` (the last row's position when
/// more items follow) and `prev` (the first row's when more come before).
///
/// A changed item on the page is updated in place, or leaves when it no longer matches; an
/// item that starts to match enters when its position falls within the bounds, so rows arrive
/// live on every page, not only the first. A page that rows left until it is less than half
/// full while more items lie beyond its bounds is [`Window::thin`]: read it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window<R> {
    pub query: ItemQuery,
    pub rows: Vec<R>,
    pub prev: Option<u32>,
    pub next: Option<u32>,
}

/// What [`Window::place`] did with a changed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// The item is on the page, at this row: the caller shows its new state.
    Updated(usize),
    /// It no longer matches and left the page.
    Left,
    /// It now matches and entered the page at this row.
    Entered(usize),
    /// It is not on this page, before or after.
    Outside,
}

impl<R: Row> Window<R> {
    pub fn new(query: ItemQuery, page: ItemsPage, row: impl FnMut(ItemProgress) -> R) -> Self {
        Self { query, rows: page.items.into_iter().map(row).collect(), prev: page.prev, next: page.next }
    }

    /// Places one changed item; `row` makes the row of an item that enters.
    pub fn place(&mut self, item: &ItemProgress, row: impl FnOnce(&ItemProgress) -> R) -> Placed {
        let found = self.rows.binary_search_by_key(&item.position, Row::position);
        let within = self.prev.is_none_or(|first| item.position >= first)
            && self.next.is_none_or(|last| item.position <= last);
        match found {
            Ok(at) if self.query.matches(item) => Placed::Updated(at),
            Ok(at) => {
                self.rows.remove(at);
                Placed::Left
            }
            Err(at) if within && self.query.matches(item) => {
                let limit = self.query.limit() as usize;
                if at >= limit {
                    // Past a full page: it belongs to the next one.
                    self.next = self.rows.last().map(Row::position);
                    return Placed::Outside;
                }
                self.rows.insert(at, row(item));
                if self.rows.len() > limit {
                    self.rows.pop();
                    self.next = self.rows.last().map(Row::position);
                }
                Placed::Entered(at)
            }
            Err(_) => Placed::Outside,
        }
    }

    /// Less than half full with more items beyond the page's bounds: worth reading again.
    pub fn thin(&self) -> bool {
        self.rows.len() < self.query.limit() as usize / 2 && (self.next.is_some() || self.prev.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ItemId;

    fn item(position: u32, name: &str, status: ItemStatus) -> ItemProgress {
        ItemProgress {
            id: ItemId::new(),
            name: name.into(),
            status,
            error: None,
            attempts: 0,
            position,
            updated_at: 0,
        }
    }

    fn window(
        query: ItemQuery,
        positions: &[u32],
        prev: Option<u32>,
        next: Option<u32>,
    ) -> Window<ItemProgress> {
        let items = positions.iter().map(|&p| item(p, &format!("{p}.jpg"), ItemStatus::Failed)).collect();
        Window::new(query, ItemsPage { items, next, prev, seq: 1 }, |i| i)
    }

    fn positions(w: &Window<ItemProgress>) -> Vec<u32> {
        w.rows.iter().map(|r| r.position).collect()
    }

    fn failed(limit: u32) -> ItemQuery {
        ItemQuery { status: Some(ItemStatus::Failed), limit: Some(limit), ..ItemQuery::default() }
    }

    #[test]
    fn matching_is_by_status_and_name_ignoring_ascii_case() {
        let query =
            ItemQuery { status: Some(ItemStatus::Done), q: Some("VoIcE".into()), ..Default::default() };
        assert!(query.matches(&item(0, "invoice-7.pdf", ItemStatus::Done)));
        assert!(!query.matches(&item(0, "invoice-7.pdf", ItemStatus::Failed)));
        assert!(!query.matches(&item(0, "receipt.pdf", ItemStatus::Done)));
        assert!(ItemQuery::default().matches(&item(0, "", ItemStatus::Pending)));
    }

    #[test]
    fn a_view_round_trips_through_its_url_and_bad_values_are_left_out() {
        let view = ItemQuery {
            status: Some(ItemStatus::Failed),
            q: Some("a&b c%".into()),
            after: Some(120),
            ..Default::default()
        };
        let url = view.to_url();
        let pairs: std::collections::HashMap<String, String> =
            form_urlencoded::parse(url.as_bytes()).into_owned().collect();
        assert_eq!(ItemQuery::from_url(|k| pairs.get(k).cloned()), view);
        assert_eq!(ItemQuery::default().to_url(), "");
        let bad = [("status", "lost"), ("after", "-3"), ("q", "")];
        let bad: std::collections::HashMap<_, _> = bad.into_iter().collect();
        assert_eq!(ItemQuery::from_url(|k| bad.get(k).map(|v| v.to_string())), ItemQuery::default());
    }

    #[test]
    fn validate_drops_an_empty_search_and_refuses_two_cursors() {
        let empty = ItemQuery { q: Some(String::new()), ..Default::default() }.validate().unwrap();
        assert_eq!(empty.q, None);
        assert!(ItemQuery { after: Some(1), before: Some(9), ..Default::default() }.validate().is_err());
        assert!(ItemQuery { q: Some("x".repeat(201)), ..Default::default() }.validate().is_err());
    }

    #[test]
    fn a_row_that_stops_matching_leaves_and_one_that_still_matches_is_updated() {
        let mut w = window(failed(10), &[2, 5, 9], None, None);
        let mut retried = w.rows[1].clone();
        retried.status = ItemStatus::Pending;
        assert_eq!(w.place(&retried, Clone::clone), Placed::Left);
        assert_eq!(positions(&w), [2, 9]);
        let mut again = w.rows[1].clone();
        again.error = Some("disk full".into());
        assert_eq!(w.place(&again, Clone::clone), Placed::Updated(1));
    }

    #[test]
    fn a_new_match_enters_in_position_order_only_within_the_pages_bounds() {
        // The second page of failed items: 10..=20, more before and after.
        let mut w = window(failed(5), &[10, 14, 20], Some(10), Some(20));
        assert_eq!(w.place(&item(12, "a", ItemStatus::Failed), Clone::clone), Placed::Entered(1));
        assert_eq!(
            w.place(&item(3, "b", ItemStatus::Failed), Clone::clone),
            Placed::Outside,
            "the page before's"
        );
        assert_eq!(
            w.place(&item(25, "c", ItemStatus::Failed), Clone::clone),
            Placed::Outside,
            "the page after's"
        );
        assert_eq!(
            w.place(&item(13, "d", ItemStatus::Done), Clone::clone),
            Placed::Outside,
            "does not match"
        );
        assert_eq!(positions(&w), [10, 12, 14, 20]);
    }

    #[test]
    fn a_full_page_gives_its_last_row_to_the_next_page() {
        let mut w = window(failed(3), &[1, 4, 7], None, None);
        assert_eq!(w.place(&item(2, "a", ItemStatus::Failed), Clone::clone), Placed::Entered(1));
        assert_eq!((positions(&w), w.next), (vec![1, 2, 4], Some(4)));
        assert_eq!(w.place(&item(9, "b", ItemStatus::Failed), Clone::clone), Placed::Outside);
        // The last page grows at its end until it is full.
        let mut last = window(failed(3), &[1], None, None);
        assert_eq!(last.place(&item(9, "c", ItemStatus::Failed), Clone::clone), Placed::Entered(1));
        assert_eq!(last.place(&item(12, "d", ItemStatus::Failed), Clone::clone), Placed::Entered(2));
        assert_eq!(last.place(&item(15, "e", ItemStatus::Failed), Clone::clone), Placed::Outside);
        assert_eq!(last.next, Some(12));
    }

    #[test]
    fn a_page_that_emptied_by_half_with_more_beyond_is_thin() {
        let mut w = window(failed(4), &[1, 2, 3, 4], None, Some(4));
        assert!(!w.thin());
        for _ in 0..3 {
            let mut done = w.rows[0].clone();
            done.status = ItemStatus::Pending;
            w.place(&done, Clone::clone);
        }
        assert!(w.thin());
        let alone = window(failed(4), &[1], None, None);
        assert!(!alone.thin(), "nothing beyond to fill it with");
    }
}
