//! The twin document: tags plus desired and reported property sections, JSON-merge patch semantics
//! with `null` removing, per-section `$version`, the twin version and etag counter, per-node
//! `$metadata`, and the documented limits.
//!
//! Every mutation is all-or-nothing: it builds and validates the new state first and only then
//! commits it, so on `Err` the twin is unchanged.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::ser::SerializeMap as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

mod view;
pub use view::{RenderedSectionView, SectionView, TwinView, value_at};

/// Longest property name, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most levels of objects and arrays nested below a section root.
pub const MAX_DEPTH: usize = 10;
/// Longest string value, in UTF-8 bytes.
pub const MAX_STRING_BYTES: usize = 4096;
/// Smallest integer value accepted (-2^52).
pub const MIN_INTEGER: i64 = -4_503_599_627_370_496;
/// Largest integer value accepted (2^52 - 1).
pub const MAX_INTEGER: i64 = 4_503_599_627_370_495;
/// Largest size of the tags section (see [`TwinError::TooLarge`] for how size is counted).
pub const MAX_TAGS_SIZE: usize = 8192;
/// Largest size of the desired and of the reported section.
pub const MAX_PROPERTIES_SIZE: usize = 32768;

/// Longest key or path quoted in an error message, in characters.
const MAX_QUOTED_CHARS: usize = 128;
/// Size charged for a number, a boolean and a null.
const NUMBER_SIZE: usize = 8;
const BOOLEAN_SIZE: usize = 4;
const NULL_SIZE: usize = 4;

/// Why a twin update was refused. The twin is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TwinError {
    /// A property name breaks the naming rules.
    #[error("invalid property name {key:?}: {reason}")]
    InvalidKey {
        /// The offending name (shortened if very long).
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Objects and arrays are nested too deeply.
    #[error("the {section} section would nest objects and arrays more than {limit} levels deep")]
    TooDeep {
        /// `tags`, `desired` or `reported`.
        section: &'static str,
        /// Deepest nesting allowed.
        limit: usize,
    },
    /// The section would exceed its size limit. Size is Σ(key length + value size), recursively,
    /// with strings counted in characters, numbers 8, booleans and nulls 4, arrays the sum of
    /// their elements.
    #[error("the {section} section would be {size} bytes, over its limit of {limit} bytes")]
    TooLarge {
        /// `tags`, `desired` or `reported`.
        section: &'static str,
        /// Size the section would have.
        size: usize,
        /// Largest size allowed.
        limit: usize,
    },
    /// A string value is too long.
    #[error("the string value of {key:?} is longer than {limit} bytes")]
    StringTooLong {
        /// Path of the property (`a.b[2]`, shortened if very long).
        key: String,
        /// Longest string allowed, in bytes.
        limit: usize,
    },
    /// An integer value is outside what IoT Hub stores exactly.
    #[error(
        "the integer value of {key:?} is outside the supported range \
         [{MIN_INTEGER}, {MAX_INTEGER}]"
    )]
    IntegerOutOfRange {
        /// Path of the property (`a.b[2]`, shortened if very long).
        key: String,
    },
}

/// When (and, for desired properties, at which version) a metadata node was last written.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    at: Timestamp,
    version: Option<i64>,
}

/// Metadata of one property or object, mirroring the shape of the section's properties.
///
/// Deserialized from the stored form, where `children` may be sparse (see [`SparseMetadata`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
struct MetadataNode {
    last_updated: Timestamp,
    #[serde(default)]
    last_updated_version: Option<i64>,
    /// One entry per member of an object value; empty for leaves and arrays.
    #[serde(default)]
    children: BTreeMap<String, MetadataNode>,
}

impl MetadataNode {
    fn stamped(stamp: Stamp) -> MetadataNode {
        MetadataNode {
            last_updated: stamp.at,
            last_updated_version: stamp.version,
            children: BTreeMap::new(),
        }
    }

    fn stamp(&mut self, stamp: Stamp) {
        self.last_updated = stamp.at;
        self.last_updated_version = stamp.version;
    }

    fn last_write(&self) -> Stamp {
        Stamp {
            at: self.last_updated,
            version: self.last_updated_version,
        }
    }

    /// The stored form of this node: only the children that [`MetadataNode::mirror`] could not
    /// restore from this node's stamp.
    fn sparse(&self) -> SparseMetadata<'_> {
        let stamp = self.last_write();
        let children = self
            .children
            .iter()
            .map(|(key, child)| (key.as_str(), child.sparse()))
            .filter(|(_, child)| !child.is_implied_by(stamp))
            .collect();
        SparseMetadata {
            last_updated: self.last_updated,
            last_updated_version: self.last_updated_version,
            children,
        }
    }

    /// Makes the children mirror `properties` exactly: a member without a node gets one carrying
    /// this node's stamp (recursively), and nodes of members that do not exist are dropped, so a
    /// stored node always reads back as the full tree the merge maintains.
    fn mirror(&mut self, properties: &Map<String, Value>) {
        let stamp = self.last_write();
        self.children.retain(|key, _| properties.contains_key(key));
        for (key, value) in properties {
            let child = self
                .children
                .entry(key.clone())
                .or_insert_with(|| MetadataNode::stamped(stamp));
            match value {
                Value::Object(members) => child.mirror(members),
                _ => child.children.clear(),
            }
        }
    }
}

/// A section as the service API shows it; see [`Section::rendered`].
pub struct RenderedSection<'a> {
    section: &'a Section,
    with_metadata: bool,
}

impl Serialize for RenderedSection<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let section = self.section;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in &section.properties {
            map.serialize_entry(key, value)?;
        }
        if self.with_metadata {
            map.serialize_entry(
                "$metadata",
                &RenderedMetadata {
                    node: &section.metadata,
                    value: Some(&section.properties),
                },
            )?;
        }
        map.serialize_entry("$version", &section.version)?;
        map.end()
    }
}

/// `{"$lastUpdated": .., ["$lastUpdatedVersion": ..,] <child>: {..}}`, children in the order of
/// the properties they describe.
struct RenderedMetadata<'a> {
    node: &'a MetadataNode,
    value: Option<&'a Map<String, Value>>,
}

impl Serialize for RenderedMetadata<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let node = self.node;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("$lastUpdated", &node.last_updated.rfc3339())?;
        if let Some(version) = node.last_updated_version {
            map.serialize_entry("$lastUpdatedVersion", &version)?;
        }
        for (key, child_value) in self.value.into_iter().flatten() {
            if let Some(child) = node.children.get(key) {
                map.serialize_entry(
                    key,
                    &RenderedMetadata {
                        node: child,
                        value: child_value.as_object(),
                    },
                )?;
            }
        }
        map.end()
    }
}

/// The three sections of a twin, which differ in limits and bookkeeping.
#[derive(Clone, Copy)]
enum SectionKind {
    Tags,
    Desired,
    Reported,
}

impl SectionKind {
    fn name(self) -> &'static str {
        match self {
            SectionKind::Tags => "tags",
            SectionKind::Desired => "desired",
            SectionKind::Reported => "reported",
        }
    }

    fn size_limit(self) -> usize {
        match self {
            SectionKind::Tags => MAX_TAGS_SIZE,
            SectionKind::Desired | SectionKind::Reported => MAX_PROPERTIES_SIZE,
        }
    }
}

/// The stored form of a [`MetadataNode`]: a child is left out when it carries its parent's stamp
/// and all of its own children are left out too, because reading it back restores exactly such a
/// child. A patch stamps every node it writes and their ancestors alike, so a section written by
/// one patch stores only its root node.
#[derive(Serialize)]
struct SparseMetadata<'a> {
    last_updated: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_updated_version: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    children: BTreeMap<&'a str, SparseMetadata<'a>>,
}

impl SparseMetadata<'_> {
    fn is_implied_by(&self, parent: Stamp) -> bool {
        let own = Stamp {
            at: self.last_updated,
            version: self.last_updated_version,
        };
        self.children.is_empty() && own == parent
    }
}

/// A property section (desired or reported): properties, their metadata and `$version`.
///
/// Serialized with sparse metadata (see [`SparseMetadata`]); deserializing accepts both that and
/// the fully populated form written by earlier versions, and yields the full metadata tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    properties: Map<String, Value>,
    metadata: MetadataNode,
    version: i64,
}

/// What [`Section`] serializes as; the field names are those of the stored format.
#[derive(Serialize)]
#[serde(rename = "Section")]
struct StoredSectionRef<'a> {
    properties: &'a Map<String, Value>,
    metadata: SparseMetadata<'a>,
    version: i64,
}

/// What [`Section`] deserializes from, before the metadata is filled in.
#[derive(Deserialize)]
#[serde(rename = "Section")]
struct StoredSection {
    properties: Map<String, Value>,
    metadata: MetadataNode,
    version: i64,
}

impl Serialize for Section {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredSectionRef {
            properties: &self.properties,
            metadata: self.metadata.sparse(),
            version: self.version,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Section {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Section, D::Error> {
        let StoredSection {
            properties,
            mut metadata,
            version,
        } = StoredSection::deserialize(deserializer)?;
        metadata.mirror(&properties);
        Ok(Section {
            properties,
            metadata,
            version,
        })
    }
}

impl Section {
    fn new(now: Timestamp) -> Section {
        Section {
            properties: Map::new(),
            metadata: MetadataNode::stamped(Stamp {
                at: now,
                version: None,
            }),
            version: 1,
        }
    }

    /// `$version`: starts at 1 and grows by one per update of this section.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The properties, without `$metadata` or `$version`. Never contains `null` members.
    pub fn properties(&self) -> &Map<String, Value> {
        &self.properties
    }

    /// When the section was last written.
    pub fn last_updated(&self) -> Timestamp {
        self.metadata.last_updated
    }

    /// `{...props, "$metadata": {...}, "$version": n}` when `with_metadata`, else
    /// `{...props, "$version": n}`.
    pub fn to_json(&self, with_metadata: bool) -> Value {
        serde_json::to_value(self.rendered(with_metadata)).unwrap_or(Value::Null)
    }

    /// What [`Section::to_json`] returns, serialized straight from the section: query pages
    /// render thousands of sections without building a JSON value for each.
    pub fn rendered(&self, with_metadata: bool) -> RenderedSection<'_> {
        RenderedSection {
            section: self,
            with_metadata,
        }
    }

    /// This section after merging `patch` (or replacing everything with it), validated.
    fn updated(
        &self,
        kind: SectionKind,
        patch: &Map<String, Value>,
        replace: bool,
        now: Timestamp,
    ) -> Result<Section, TwinError> {
        validate_patch(kind, patch)?;
        let version = self.version.saturating_add(1);
        let stamp = Stamp {
            at: now,
            version: matches!(kind, SectionKind::Desired).then_some(version),
        };
        let mut next = if replace {
            Section {
                properties: Map::new(),
                metadata: MetadataNode::stamped(stamp),
                version,
            }
        } else {
            self.clone()
        };
        merge(&mut next.properties, Some(&mut next.metadata), patch, stamp);
        next.version = version;
        validate_document(kind, &next.properties)?;
        Ok(next)
    }
}

/// A change to one section requested through the service API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// JSON merge: members add or replace, `null` removes, objects merge recursively.
    Patch(Map<String, Value>),
    /// The section becomes exactly this (nulls dropped).
    Replace(Map<String, Value>),
}

impl Change {
    /// The members to merge, and whether they replace the whole section.
    fn parts(&self) -> (&Map<String, Value>, bool) {
        match self {
            Change::Patch(patch) => (patch, false),
            Change::Replace(properties) => (properties, true),
        }
    }

    /// An empty patch changes nothing; a replacement always counts as a write.
    fn is_noop(&self) -> bool {
        matches!(self, Change::Patch(patch) if patch.is_empty())
    }
}

/// A service-side twin update: tags and/or desired properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceUpdate {
    /// Change to the tags, if any.
    pub tags: Option<Change>,
    /// Change to the desired properties, if any.
    pub desired: Option<Change>,
}

/// The twin of a device or module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Twin {
    /// Service-only tags (no metadata, no section version). Never contains `null` members.
    pub tags: Map<String, Value>,
    /// Desired properties, written by the service and pushed to the device.
    pub desired: Section,
    /// Reported properties, written by the device.
    pub reported: Section,
    /// Grows by one per successful update of any section.
    pub version: i64,
    /// Grows by one per write of tags or desired properties (not reported ones, so device
    /// updates do not break a service's `If-Match`); rendered by [`Twin::etag`].
    pub etag_version: u64,
    /// IoT Plug and Play model id announced by the device.
    pub model_id: Option<String>,
}

impl Twin {
    /// An empty twin: both `$version`s, `version` and the etag counter at 1, metadata stamped `now`.
    pub fn new(now: Timestamp) -> Twin {
        Twin {
            tags: Map::new(),
            desired: Section::new(now),
            reported: Section::new(now),
            version: 1,
            etag_version: 1,
            model_id: None,
        }
    }

    /// Applies a service update to tags and/or desired properties, all or nothing.
    ///
    /// Returns the desired-property notification to push to the device, or `None` when desired
    /// properties did not change: for a patch, the patch as applied (nulls meaning "removed"); for
    /// a replacement, the new desired properties plus an explicit `null` for every removed
    /// top-level key (and for removed keys inside objects present before and after, so that a
    /// device merging the notification ends up with exactly the new properties). The caller adds
    /// `"$version"` from `self.desired.version()`.
    pub fn apply_service_update(
        &mut self,
        update: ServiceUpdate,
        now: Timestamp,
    ) -> Result<Option<Map<String, Value>>, TwinError> {
        let ServiceUpdate { tags, desired } = update;
        let tags = tags.filter(|change| !change.is_noop());
        let desired = desired.filter(|change| !change.is_noop());

        let new_tags = tags
            .as_ref()
            .map(|change| updated_tags(&self.tags, change))
            .transpose()?;
        let new_desired = desired
            .as_ref()
            .map(|change| {
                let (patch, replace) = change.parts();
                self.desired
                    .updated(SectionKind::Desired, patch, replace, now)
            })
            .transpose()?;
        if new_tags.is_none() && new_desired.is_none() {
            return Ok(None);
        }

        let notification = match (desired, &new_desired) {
            (Some(Change::Patch(patch)), Some(_)) => Some(patch),
            (Some(Change::Replace(_)), Some(next)) => Some(replacement_notification(
                &self.desired.properties,
                &next.properties,
            )),
            _ => None,
        };
        if let Some(tags) = new_tags {
            self.tags = tags;
        }
        if let Some(desired) = new_desired {
            self.desired = desired;
        }
        self.version = self.version.saturating_add(1);
        self.etag_version = self.etag_version.saturating_add(1);
        Ok(notification)
    }

    /// Merges a device's reported-property patch, all or nothing. An empty patch changes nothing.
    pub fn patch_reported(
        &mut self,
        patch: &Map<String, Value>,
        now: Timestamp,
    ) -> Result<(), TwinError> {
        if patch.is_empty() {
            return Ok(());
        }
        self.reported = self
            .reported
            .updated(SectionKind::Reported, patch, false, now)?;
        self.version = self.version.saturating_add(1);
        Ok(())
    }

    /// The twin etag: base64 of the etag counter as 8 big-endian bytes (1 → `AAAAAAAAAAE=`).
    pub fn etag(&self) -> String {
        BASE64.encode(self.etag_version.to_be_bytes())
    }
}

/// What a device must merge to go from `old` to `new`: all of `new`, plus `null` for every key of
/// `old` that is gone, recursing where both sides hold an object so nested removals arrive too.
fn replacement_notification(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Map<String, Value> {
    let mut notification = Map::new();
    for (key, value) in new {
        let entry = match (old.get(key), value) {
            (Some(Value::Object(old_object)), Value::Object(new_object)) => {
                Value::Object(replacement_notification(old_object, new_object))
            }
            _ => value.clone(),
        };
        notification.insert(key.clone(), entry);
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            notification.insert(key.clone(), Value::Null);
        }
    }
    notification
}

/// The tags after `change`, validated.
fn updated_tags(
    tags: &Map<String, Value>,
    change: &Change,
) -> Result<Map<String, Value>, TwinError> {
    let (patch, replace) = change.parts();
    validate_patch(SectionKind::Tags, patch)?;
    let mut next = if replace { Map::new() } else { tags.clone() };
    // Tags keep no metadata, so this stamp is never recorded.
    let unrecorded = Stamp {
        at: Timestamp::NEVER,
        version: None,
    };
    merge(&mut next, None, patch, unrecorded);
    validate_document(SectionKind::Tags, &next)?;
    Ok(next)
}

/// JSON merge of `patch` into `target` (RFC 7396), keeping `metadata` (when the section has any)
/// in step: the node itself and every written member are stamped, removed members lose their
/// metadata.
fn merge(
    target: &mut Map<String, Value>,
    mut metadata: Option<&mut MetadataNode>,
    patch: &Map<String, Value>,
    stamp: Stamp,
) {
    if let Some(node) = metadata.as_deref_mut() {
        node.stamp(stamp);
    }
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.shift_remove(key);
                if let Some(node) = metadata.as_deref_mut() {
                    node.children.remove(key);
                }
            }
            Value::Object(sub_patch) => {
                let child_metadata = metadata.as_deref_mut().map(|node| {
                    node.children
                        .entry(key.clone())
                        .or_insert_with(|| MetadataNode::stamped(stamp))
                });
                if let Some(Value::Object(sub_target)) = target.get_mut(key) {
                    merge(sub_target, child_metadata, sub_patch, stamp);
                } else {
                    // An object patch onto a missing or non-object value starts from an empty
                    // object, which also drops the patch's nulls.
                    let child_metadata = child_metadata.map(|child| {
                        *child = MetadataNode::stamped(stamp);
                        child
                    });
                    let mut fresh = Map::new();
                    merge(&mut fresh, child_metadata, sub_patch, stamp);
                    target.insert(key.clone(), Value::Object(fresh));
                }
            }
            leaf => {
                target.insert(key.clone(), leaf.clone());
                if let Some(node) = metadata.as_deref_mut() {
                    node.children
                        .insert(key.clone(), MetadataNode::stamped(stamp));
                }
            }
        }
    }
}

/// Checks a patch before merging: names (including those of removed members), depth, strings and
/// integers. Catching depth here also bounds the recursion of the merge.
fn validate_patch(kind: SectionKind, patch: &Map<String, Value>) -> Result<(), TwinError> {
    Validator::new(kind).object(patch, 0).map(|_| ())
}

/// Checks a merged section against every rule, including its size.
fn validate_document(kind: SectionKind, properties: &Map<String, Value>) -> Result<(), TwinError> {
    let size = Validator::new(kind).object(properties, 0)?;
    let limit = kind.size_limit();
    if size > limit {
        return Err(TwinError::TooLarge {
            section: kind.name(),
            size,
            limit,
        });
    }
    Ok(())
}

/// One step of the path to a value, for error messages.
enum PathStep<'a> {
    Key(&'a str),
    Index(usize),
}

/// Walks a section checking the rules and adding up its size.
struct Validator<'a> {
    kind: SectionKind,
    path: Vec<PathStep<'a>>,
}

impl<'a> Validator<'a> {
    fn new(kind: SectionKind) -> Validator<'a> {
        Validator {
            kind,
            path: Vec::new(),
        }
    }

    /// Size of an object whose own nesting level is `level` (0 for the section root).
    fn object(&mut self, object: &'a Map<String, Value>, level: usize) -> Result<usize, TwinError> {
        let mut size = 0;
        for (key, value) in object {
            check_key(key)?;
            self.path.push(PathStep::Key(key));
            size += key.chars().count() + self.value(value, level + 1)?;
            self.path.pop();
        }
        Ok(size)
    }

    /// Size of a value that would sit at nesting `level` if it were an object or array.
    fn value(&mut self, value: &'a Value, level: usize) -> Result<usize, TwinError> {
        match value {
            Value::Object(_) | Value::Array(_) if level > MAX_DEPTH => Err(TwinError::TooDeep {
                section: self.kind.name(),
                limit: MAX_DEPTH,
            }),
            Value::Object(object) => self.object(object, level),
            Value::Array(items) => {
                let mut size = 0;
                for (index, item) in items.iter().enumerate() {
                    self.path.push(PathStep::Index(index));
                    size += self.value(item, level + 1)?;
                    self.path.pop();
                }
                Ok(size)
            }
            Value::String(s) if s.len() > MAX_STRING_BYTES => Err(TwinError::StringTooLong {
                key: self.path_text(),
                limit: MAX_STRING_BYTES,
            }),
            Value::String(s) => Ok(s.chars().count()),
            Value::Number(n) => {
                let in_range = match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => (MIN_INTEGER..=MAX_INTEGER).contains(&i),
                    (None, Some(_)) => false,
                    // Floating-point values are stored as such; the range only protects integers.
                    (None, None) => true,
                };
                if in_range {
                    Ok(NUMBER_SIZE)
                } else {
                    Err(TwinError::IntegerOutOfRange {
                        key: self.path_text(),
                    })
                }
            }
            Value::Bool(_) => Ok(BOOLEAN_SIZE),
            Value::Null => Ok(NULL_SIZE),
        }
    }

    fn path_text(&self) -> String {
        let mut text = String::new();
        for step in &self.path {
            match step {
                PathStep::Key(key) => {
                    if !text.is_empty() {
                        text.push('.');
                    }
                    text.push_str(key);
                }
                PathStep::Index(index) => text.push_str(&format!("[{index}]")),
            }
        }
        shortened(&text)
    }
}

/// Names: non-empty, at most 1 KB, no control characters, `.`, `$` or space.
fn check_key(key: &str) -> Result<(), TwinError> {
    let reason = if key.is_empty() {
        "names must not be empty"
    } else if key.len() > MAX_KEY_BYTES {
        "names must be at most 1024 bytes long"
    } else if key.chars().any(char::is_control) {
        "names must not contain control characters"
    } else if key.contains(['.', '$', ' ']) {
        "names must not contain '.', '$' or spaces"
    } else {
        return Ok(());
    };
    Err(TwinError::InvalidKey {
        key: shortened(key),
        reason,
    })
}

/// `text`, cut to a length fit for an error message.
fn shortened(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED_CHARS {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(MAX_QUOTED_CHARS).collect();
        short.push('…');
        short
    }
}

/// Checks that stored bytes decode as a [`Twin`] without building one: deserializing this
/// accepts exactly what `Twin`'s `Deserialize` accepts (the same fields, types and nesting) but
/// only scans property values and metadata, several times faster. A hub checks every stored
/// twin this way when it starts.
pub struct TwinShape;

impl<'de> Deserialize<'de> for TwinShape {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<TwinShape, D::Error> {
        StoredTwinShape::deserialize(deserializer).map(|_| TwinShape)
    }
}

/// [`Twin`]'s stored fields, with sections and tags only checked.
#[derive(Deserialize)]
#[serde(rename = "Twin")]
#[allow(dead_code)] // The fields are read for their checks, never used.
struct StoredTwinShape {
    tags: Members<ValueShape>,
    desired: StoredSectionShape,
    reported: StoredSectionShape,
    version: i64,
    etag_version: u64,
    model_id: Option<IgnoredString>,
}

/// [`StoredSection`], checked.
#[derive(Deserialize)]
#[serde(rename = "Section")]
#[allow(dead_code)]
struct StoredSectionShape {
    properties: Members<ValueShape>,
    metadata: MetadataShape,
    version: i64,
}

/// [`MetadataNode`], checked.
#[derive(Deserialize)]
#[serde(rename = "MetadataNode")]
#[allow(dead_code)]
struct MetadataShape {
    last_updated: Timestamp,
    #[serde(default)]
    last_updated_version: Option<i64>,
    #[serde(default)]
    children: Members<MetadataShape>,
}

/// A JSON object whose members each deserialize as `T`, keys being any string; nothing kept.
struct Members<T>(std::marker::PhantomData<T>);

impl<T> Default for Members<T> {
    fn default() -> Self {
        Members(std::marker::PhantomData)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Members<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = Members<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members<T>, A::Error> {
                while map.next_entry::<IgnoredString, T>()?.is_some() {}
                Ok(Members::default())
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// Any JSON value `serde_json::Value` accepts (numbers must fit an `f64`), checked and not kept.
struct ValueShape;

impl<'de> Deserialize<'de> for ValueShape {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ValueShape;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<ValueShape, E> {
                Ok(ValueShape)
            }
            fn visit_i64<E>(self, _: i64) -> Result<ValueShape, E> {
                Ok(ValueShape)
            }
            fn visit_u64<E>(self, _: u64) -> Result<ValueShape, E> {
                Ok(ValueShape)
            }
            fn visit_f64<E>(self, _: f64) -> Result<ValueShape, E> {
                Ok(ValueShape)
            }
            fn visit_str<E>(self, _: &str) -> Result<ValueShape, E> {
                Ok(ValueShape)
            }
            fn visit_unit<E>(self) -> Result<ValueShape, E> {
                Ok(ValueShape)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ValueShape, A::Error> {
                while seq.next_element::<ValueShape>()?.is_some() {}
                Ok(ValueShape)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ValueShape, A::Error> {
                while map.next_entry::<IgnoredString, ValueShape>()?.is_some() {}
                Ok(ValueShape)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A string, checked to be one and not kept.
struct IgnoredString;

impl<'de> Deserialize<'de> for IgnoredString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IgnoredString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<IgnoredString, E> {
                Ok(IgnoredString)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests;
