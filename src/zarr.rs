//! Zarr knowledge, as a leaf without I/O: which keys are metadata documents,
//! and whether a metadata document is acceptable for a commit.

/// Whether a key names a Zarr metadata document (v2, the draft v3 layout of
/// zarr-python 2.18, or v3 final), as opposed to chunk data.
pub fn is_metadata(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    matches!(
        name,
        "zarr.json" | ".zarray" | ".zgroup" | ".zattrs" | ".zmetadata"
    ) || name.ends_with(".array.json")
        || name.ends_with(".group.json")
}

/// The seed's marker for a change: `[M]` for metadata, `[C]` for chunks.
pub fn change_marker(path: &str) -> &'static str {
    if is_metadata(path) { "[M]" } else { "[C]" }
}

/// Check a metadata document's bytes: it must be a JSON object. The error
/// says what is wrong in serde_json's words (with line and column).
pub fn validate_metadata(bytes: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(other) => Err(format!(
            "expected a JSON object, found {}",
            json_kind(&other)
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keys_of_every_layout_are_recognised_and_chunks_are_not() {
        for key in [
            "meta/root.group.json",
            "meta/root/toy_data/ones.array.json",
            "x/zarr.json",
            "zarr.json",
            "a/.zarray",
            ".zgroup",
            "a/.zattrs",
            ".zmetadata",
        ] {
            assert!(is_metadata(key), "{key} is metadata");
        }
        for key in [
            "data/root/toy_data/ones/c0/0",
            "a/c/0/0",
            "a/0.0",
            "a/zarr.json.tmp",
        ] {
            assert!(!is_metadata(key), "{key} is chunk data");
        }
    }

    #[test]
    fn only_json_objects_pass_validation() {
        assert!(validate_metadata(br#"{"zarr_format": 3}"#).is_ok());
        assert!(
            validate_metadata(b"[1, 2]")
                .unwrap_err()
                .contains("an array")
        );
        assert!(
            validate_metadata(b"{not json")
                .unwrap_err()
                .contains("line 1")
        );
    }
}
