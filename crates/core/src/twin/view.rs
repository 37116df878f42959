//! Stored twins read in place. Rendering a twin for the service API needs its property text and
//! the shape of its objects, not a built [`Twin`](super::Twin): a view keeps each section's
//! properties as the stored JSON text and its metadata as stored (sparse), and renders exactly
//! what [`Section::rendered`](super::Section::rendered) renders for the decoded twin, at a
//! fraction of the cost. Queries render thousands of twins that nobody is writing.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::ser::{Error as _, SerializeMap as _};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::time::{Rfc3339, Timestamp};

/// A twin as stored, borrowed from the stored bytes. Deserialize it only from bytes that
/// [`TwinShape`](super::TwinShape) or the full decode accepted: it checks less.
#[derive(Deserialize)]
#[serde(rename = "Twin")]
pub struct TwinView<'a> {
    #[serde(borrow)]
    tags: &'a RawValue,
    #[serde(borrow)]
    desired: SectionView<'a>,
    #[serde(borrow)]
    reported: SectionView<'a>,
    version: i64,
    etag_version: u64,
    model_id: Option<String>,
}

impl<'a> TwinView<'a> {
    /// The tags as stored: the JSON text the decoded twin's tags serialize to.
    pub fn tags(&self) -> &'a RawValue {
        self.tags
    }

    pub fn desired(&self) -> &SectionView<'a> {
        &self.desired
    }

    pub fn reported(&self) -> &SectionView<'a> {
        &self.reported
    }

    /// See [`Twin::version`](super::Twin::version).
    pub fn version(&self) -> i64 {
        self.version
    }

    /// See [`Twin::etag`](super::Twin::etag).
    pub fn etag(&self) -> String {
        BASE64.encode(self.etag_version.to_be_bytes())
    }

    pub fn model_id(&self) -> Option<&str> {
        self.model_id.as_deref()
    }
}

/// A stored [`Section`](super::Section): properties as text, metadata sparse.
#[derive(Deserialize)]
#[serde(rename = "Section")]
pub struct SectionView<'a> {
    #[serde(borrow)]
    properties: &'a RawValue,
    /// Read only when rendered with `$metadata`.
    #[serde(borrow)]
    metadata: &'a RawValue,
    version: i64,
}

impl<'a> SectionView<'a> {
    /// The properties as stored: the JSON text of the decoded section's properties.
    pub fn properties(&self) -> &'a RawValue {
        self.properties
    }

    /// Serializes to what [`Section::rendered`](super::Section::rendered) serializes to for the
    /// decoded section.
    pub fn rendered(&self, with_metadata: bool) -> RenderedSectionView<'_> {
        RenderedSectionView {
            section: self,
            with_metadata,
        }
    }
}

/// A stored metadata node: its stamp and the children stored for it, sorted by key. A member
/// without a stored child carries this node's stamp, as do all of its descendants.
#[derive(Deserialize)]
#[serde(rename = "MetadataNode")]
struct StoredNode<'a> {
    last_updated: Timestamp,
    #[serde(default)]
    last_updated_version: Option<i64>,
    #[serde(default, borrow)]
    children: Children<'a>,
}

#[derive(Default)]
struct Children<'a>(Vec<(Key<'a>, StoredNode<'a>)>);

impl<'a> Children<'a> {
    fn get(&self, key: &str) -> Option<&StoredNode<'a>> {
        self.0
            .binary_search_by(|(candidate, _)| (*candidate.0).cmp(key))
            .ok()
            .map(|at| &self.0[at].1)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Children<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut children = Children(Members::deserialize(deserializer)?.0);
        // Stored from a sorted map; sorting again keeps lookups right whatever wrote the file.
        children.0.sort_by(|(a, _), (b, _)| a.0.cmp(&b.0));
        Ok(children)
    }
}

/// An object's members in document order, values deserialized as `T`.
struct Members<'a, T>(Vec<(Key<'a>, T)>);

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for Members<'a, T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a, T>(std::marker::PhantomData<(&'a (), T)>);
        impl<'de: 'a, 'a, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<'a, T> {
            type Value = Members<'a, T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(member) = map.next_entry::<Key<'a>, T>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// An object key, borrowed from the stored text unless it had escapes to undo.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
            fn visit_string<E>(self, key: String) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

/// The value at `path` below `object` (the stored text of tags or of a section's properties),
/// through objects only, built from its text alone; `None` when there is none.
pub fn value_at(object: &RawValue, path: &[impl AsRef<str>]) -> Option<serde_json::Value> {
    let mut value = object;
    for segment in path {
        if !is_object(value) {
            return None;
        }
        let found = members(value)
            .ok()?
            .into_iter()
            .find(|(key, _)| key.0 == segment.as_ref())?;
        value = found.1;
    }
    serde_json::from_str(value.get()).ok()
}

/// The members of an object's stored text, each value still text.
fn members(object: &RawValue) -> Result<Vec<(Key<'_>, &RawValue)>, serde_json::Error> {
    serde_json::from_str::<Members<'_, &RawValue>>(object.get()).map(|members| members.0)
}

/// A section view as the service API shows it; see [`SectionView::rendered`].
pub struct RenderedSectionView<'a> {
    section: &'a SectionView<'a>,
    with_metadata: bool,
}

impl Serialize for RenderedSectionView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let section = self.section;
        let properties = members(section.properties).map_err(S::Error::custom)?;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in &properties {
            map.serialize_entry(&*key.0, value)?;
        }
        if self.with_metadata {
            let node: StoredNode<'_> =
                serde_json::from_str(section.metadata.get()).map_err(S::Error::custom)?;
            let node = &node;
            let stamp = StampText::of(node).map_err(S::Error::custom)?;
            map.serialize_entry(
                "$metadata",
                &RenderedNode {
                    stamp: &stamp,
                    stored: Some(&node.children),
                    members: Some(&properties),
                },
            )?;
        }
        map.serialize_entry("$version", &section.version)?;
        map.end()
    }
}

/// A stamp as rendered, kept for every node that carries it: most nodes inherit their parent's.
struct StampText {
    last_updated: Rfc3339,
    last_updated_version: Option<i64>,
    /// The whole `$metadata` node of a leaf with this stamp.
    leaf: Box<RawValue>,
}

impl StampText {
    fn of(node: &StoredNode<'_>) -> Result<Self, serde_json::Error> {
        let last_updated = node.last_updated.rfc3339();
        let leaf = serde_json::value::to_raw_value(&LeafNode {
            last_updated,
            last_updated_version: node.last_updated_version,
        })?;
        Ok(Self {
            last_updated,
            last_updated_version: node.last_updated_version,
            leaf,
        })
    }
}

/// The `$metadata` node of a value that is not an object.
#[derive(Serialize)]
struct LeafNode {
    #[serde(rename = "$lastUpdated")]
    last_updated: Rfc3339,
    #[serde(
        rename = "$lastUpdatedVersion",
        skip_serializing_if = "Option::is_none"
    )]
    last_updated_version: Option<i64>,
}

/// One node of `$metadata`: its stamp, then a node per member of the value it describes (when
/// that value is an object), in the members' order.
struct RenderedNode<'n, 'a> {
    stamp: &'n StampText,
    /// The children stored for this node; `None` when every child carries this node's stamp.
    stored: Option<&'n Children<'a>>,
    members: Option<&'n [(Key<'a>, &'a RawValue)]>,
}

impl Serialize for RenderedNode<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("$lastUpdated", &self.stamp.last_updated)?;
        if let Some(version) = self.stamp.last_updated_version {
            map.serialize_entry("$lastUpdatedVersion", &version)?;
        }
        for (key, value) in self.members.into_iter().flatten() {
            let stored = self.stored.and_then(|stored| stored.get(&key.0));
            let own_stamp = stored
                .map(StampText::of)
                .transpose()
                .map_err(S::Error::custom)?;
            let stamp = own_stamp.as_ref().unwrap_or(self.stamp);
            if !is_object(value) {
                map.serialize_entry(&*key.0, &*stamp.leaf)?;
                continue;
            }
            let object = members(value).map_err(S::Error::custom)?;
            let child = RenderedNode {
                stamp,
                stored: stored.map(|stored| &stored.children),
                members: Some(&object),
            };
            map.serialize_entry(&*key.0, &child)?;
        }
        map.end()
    }
}

fn is_object(value: &RawValue) -> bool {
    value.get().trim_start().starts_with('{')
}
