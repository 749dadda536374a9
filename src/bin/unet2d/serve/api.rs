//! `POST /v1/images`'s JSON body, read field by field so that every mistake is answered with what
//! to send instead (serde's derive would answer "data did not match any variant").

use candle_unet2d::service::{ClassLabels, ImageRequest};
use serde_json::{Map, Value};

use super::encode::Format;
use super::errors::ApiError;

/// The fields a request may have.
const FIELDS: &[&str] = &["num_images", "seed", "class_labels", "scheduler", "num_inference_steps", "eta", "format"];

/// A parsed request.
#[derive(Debug)]
pub struct Parsed {
    pub request: ImageRequest,
    pub format: Format,
}

/// Reads the body.
pub fn parse(body: &[u8]) -> Result<Parsed, ApiError> {
    let malformed = |message: String| ApiError::new(axum::http::StatusCode::BAD_REQUEST, "malformed_json", message);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed(r#"the body is empty: send a JSON object such as {"num_images": 4, "seed": 0}"#.into()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(r#"the body is not valid JSON ({e}): send an object such as {{"num_images": 4, "seed": 0}}"#))
    })?;
    let Value::Object(map) = value else {
        return Err(malformed(format!("the body must be a JSON object, got {}", kind(&value))));
    };
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "unknown_field",
            format!("unknown field `{unknown}`; the fields are {}", FIELDS.join(", ")),
        ));
    }
    let class_labels = class_labels(&map)?;
    let num_images = match (whole(&map, "num_images")?, &class_labels) {
        (Some(n), _) => n,
        // A list of labels says how many images.
        (None, ClassLabels::PerImage(labels)) => labels.len() as u64,
        (None, _) => 1,
    };
    let request = ImageRequest {
        num_images: usize::try_from(num_images).unwrap_or(usize::MAX),
        seed: whole(&map, "seed")?.unwrap_or(0),
        class_labels,
        scheduler: match map.get("scheduler") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(ApiError::field(
                    "scheduler",
                    format!("must be a scheduler's name such as \"ddim\", got {}", kind(other)),
                ))
            }
        },
        num_inference_steps: whole(&map, "num_inference_steps")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        eta: match map.get("eta") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(other) => return Err(ApiError::field("eta", format!("must be a number ≥ 0, got {}", kind(other)))),
        },
        timeout: None,
    };
    let format = match map.get("format") {
        None | Some(Value::Null) => Format::Png,
        Some(Value::String(s)) if s == "png" => Format::Png,
        Some(Value::String(s)) if s == "npy" => Format::Npy,
        Some(other) => return Err(ApiError::field("format", format!("must be \"png\" or \"npy\", got {other}"))),
    };
    Ok(Parsed { request, format })
}

/// A whole number ≥ 0 (`null` or absent: `None`).
fn whole(map: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(ApiError::field(field, format!("must be a whole number ≥ 0, got {other}"))),
    }
}

fn class_labels(map: &Map<String, Value>) -> Result<ClassLabels, ApiError> {
    let label = |v: &Value| {
        v.as_i64()
            .ok_or_else(|| ApiError::field("class_labels", format!("must hold whole numbers (class ids), got {v}")))
    };
    match map.get("class_labels") {
        None | Some(Value::Null) => Ok(ClassLabels::Default),
        Some(Value::Array(items)) if items.is_empty() => Err(ApiError::field(
            "class_labels",
            "is an empty list: give one class per image, one number for all, or null",
        )),
        Some(Value::Array(items)) => Ok(ClassLabels::PerImage(items.iter().map(label).collect::<Result<_, _>>()?)),
        Some(v @ Value::Number(_)) => Ok(ClassLabels::All(label(v)?)),
        Some(other) => Err(ApiError::field(
            "class_labels",
            format!("must be a class id, a list of them, or null, got {}", kind(other)),
        )),
    }
}

/// What a JSON value is, for messages.
fn kind(value: &Value) -> String {
    match value {
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> String {
        parse(body.as_bytes()).unwrap_err().code
    }

    #[test]
    fn fields_are_read_with_their_defaults() {
        let p = parse(br#"{"class_labels": [3, 1, 4], "seed": 9, "scheduler": "ddim", "format": "npy"}"#).unwrap();
        assert_eq!(p.request.num_images, 3);
        assert_eq!(p.request.seed, 9);
        assert_eq!(p.request.class_labels, ClassLabels::PerImage(vec![3, 1, 4]));
        assert_eq!(p.request.scheduler.as_deref(), Some("ddim"));
        assert_eq!(p.format, Format::Npy);
        let p = parse(b"{}").unwrap();
        assert_eq!((p.request.num_images, p.request.seed, p.format), (1, 0, Format::Png));
        assert_eq!(
            parse(br#"{"class_labels": 7, "num_images": 2}"#).unwrap().request.class_labels,
            ClassLabels::All(7)
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(code(""), "malformed_json");
        assert_eq!(code("{"), "malformed_json");
        assert_eq!(code("[1]"), "malformed_json");
        assert_eq!(code(r#"{"num_image": 1}"#), "unknown_field");
        assert_eq!(code(r#"{"num_images": -1}"#), "invalid_num_images");
        assert_eq!(code(r#"{"num_images": 1.5}"#), "invalid_num_images");
        assert_eq!(code(r#"{"seed": "x"}"#), "invalid_seed");
        assert_eq!(code(r#"{"class_labels": "3"}"#), "invalid_class_labels");
        assert_eq!(code(r#"{"class_labels": [1, 2.5]}"#), "invalid_class_labels");
        assert_eq!(code(r#"{"class_labels": []}"#), "invalid_class_labels");
        assert_eq!(code(r#"{"scheduler": 3}"#), "invalid_scheduler");
        assert_eq!(code(r#"{"format": "jpeg"}"#), "invalid_format");
        assert_eq!(code(r#"{"eta": "1"}"#), "invalid_eta");
    }
}
