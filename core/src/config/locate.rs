//! Finds where a field path sits in the configuration text.
//!
//! Validation works on the typed [`Config`](super::Config), which has no memory of the text,
//! so its errors know only their [`FieldPath`]. `toml_edit` keeps the span of every key and
//! value, so the path is looked up in the document to give the error a line and column.

use std::ops::Range;

use toml_edit::{Document, Item, Table, TableLike, Value};

use super::{FieldPath, Location, PathSegment};

/// The configuration text, parsed once with spans, for locating any number of paths.
pub(crate) struct SpannedDocument<'text> {
    text: &'text str,
    /// `None` if `toml_edit` rejects a text that `toml` accepted. Both use the same parser
    /// crate, so this should not happen; if it does, errors fall back to the document start
    /// rather than being lost.
    document: Option<Document<&'text str>>,
}

impl<'text> SpannedDocument<'text> {
    pub(crate) fn parse(text: &'text str) -> SpannedDocument<'text> {
        SpannedDocument { text, document: Document::parse(text).ok() }
    }

    /// Where `path` points: its value if every key on the path exists (for a table, the
    /// table's own key, such as `dns` in `[listeners.dns]`); otherwise the deepest table that
    /// exists, which is where the missing key belongs (its `[header]`, or the `{` of an
    /// inline table).
    pub(crate) fn locate(&self, path: &FieldPath) -> Location {
        let span = self.document.as_ref().and_then(|document| locate_span(document.as_item(), path));
        span.map_or(Location::START, |span| Location::from_offset(self.text, span.start))
    }
}

/// One step of the walk. Array elements are `Table`s (`[[array]]`) or `Value`s (inline
/// arrays), not `Item`s, hence three shapes.
#[derive(Copy, Clone)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(item) => item.span(),
            Node::Table(table) => table.span(),
            Node::Value(value) => value.span(),
        }
    }

    fn is_value(self) -> bool {
        match self {
            Node::Item(item) => item.is_value(),
            Node::Table(_) => false,
            Node::Value(_) => true,
        }
    }

    fn as_table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(item) => item.as_table_like(),
            Node::Table(table) => Some(table),
            Node::Value(value) => value.as_inline_table().map(|table| table as &dyn TableLike),
        }
    }

    fn element(self, index: usize) -> Option<Node<'a>> {
        match self {
            Node::Item(Item::ArrayOfTables(array)) => array.get(index).map(Node::Table),
            Node::Item(Item::Value(Value::Array(array))) | Node::Value(Value::Array(array)) => {
                array.get(index).map(Node::Value)
            }
            _ => None,
        }
    }
}

/// Walks `path` from `root`; see [`SpannedDocument::locate`]. The walk is bounded by the
/// path's length.
fn locate_span(root: &Item, path: &FieldPath) -> Option<Range<usize>> {
    let segments = path.segments();
    let mut node = Node::Item(root);
    // The span of the deepest container found so far: where a missing key belongs.
    let mut container_span = root.span();
    for (position, segment) in segments.iter().enumerate() {
        let (child, key_span) = match segment {
            PathSegment::Key(key) => {
                let Some(table) = node.as_table_like() else {
                    return container_span;
                };
                let Some(child) = table.get(key) else {
                    return container_span;
                };
                (Node::Item(child), table.key(key).and_then(|key| key.span()))
            }
            PathSegment::Index(index) => {
                let Some(child) = node.element(*index) else {
                    return container_span;
                };
                (child, None)
            }
        };
        if position + 1 == segments.len() {
            // A table's own span is its whole `[a.b.c]` header; its key points at the name
            // itself, which is what a name error is about.
            let span =
                if child.is_value() { child.span().or(key_span) } else { key_span.or_else(|| child.span()) };
            return span.or(container_span);
        }
        container_span = child.span().or(container_span);
        node = child;
    }
    container_span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locate(text: &str, path: FieldPath) -> (usize, usize) {
        let location = SpannedDocument::parse(text).locate(&path);
        (location.line, location.column)
    }

    fn path(keys: &[&str]) -> FieldPath {
        keys.iter().fold(FieldPath::root(), |path, key| path.key(*key))
    }

    const TEXT: &str = r#"[listeners."dns.v2"]
address = "127.0.0.1:53"
cluster = "dns"

[clusters.dns]
idle_timeout.front = "0s"
backends = [
  { id = "a", address = "127.0.0.1:5301" },
  { id = "b", address = "127.0.0.1:5302" },
]

[[clusters.syslog.backends]]
id = "c"
address = "127.0.0.1:514"
"#;

    #[test]
    fn existing_value_is_located_at_the_value() {
        assert_eq!(locate(TEXT, path(&["listeners", "dns.v2", "cluster"])), (3, 11));
        assert_eq!(locate(TEXT, path(&["clusters", "dns", "idle_timeout", "front"])), (6, 22));
        let address = path(&["clusters", "dns", "backends"]).index(1).key("address");
        assert_eq!(locate(TEXT, address), (9, 25));
        let id = path(&["clusters", "syslog", "backends"]).index(0).key("id");
        assert_eq!(locate(TEXT, id), (13, 6));
    }

    #[test]
    fn existing_table_is_located_at_its_key() {
        assert_eq!(locate(TEXT, path(&["listeners", "dns.v2"])), (1, 12));
        assert_eq!(locate(TEXT, path(&["clusters", "dns"])), (5, 11));
        // A cluster that exists only through `[[clusters.syslog.backends]]`.
        assert_eq!(locate(TEXT, path(&["clusters", "syslog"])), (12, 12));
    }

    #[test]
    fn missing_key_is_located_at_the_enclosing_table() {
        assert_eq!(locate(TEXT, path(&["listeners", "dns.v2", "max_flows"])), (1, 1));
        assert_eq!(locate(TEXT, path(&["clusters", "dns", "lifetime"])), (5, 1));
        let weight = path(&["clusters", "dns", "backends"]).index(0).key("weight");
        assert_eq!(locate(TEXT, weight), (8, 3));
        let weight = path(&["clusters", "syslog", "backends"]).index(0).key("weight");
        assert_eq!(locate(TEXT, weight), (12, 1));
        // Nothing of the path exists: the document start.
        assert_eq!(locate(TEXT, path(&["process", "max_flows"])), (1, 1));
    }

    #[test]
    fn unparsable_text_locates_at_the_start() {
        assert_eq!(locate("[a", path(&["a"])), (1, 1));
    }
}
