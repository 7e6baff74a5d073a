//! `json`: JSON objects decoded against declared columns, and rows written as JSON objects.

mod decode;
mod encode;
mod fast;

pub use decode::JsonDecoder;
pub(super) use decode::{append, kind, push_scalar};
pub(super) use encode::encode;
pub use encode::{json_row_bound, validate_json};
