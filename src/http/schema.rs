//! OpenAPI schemas of the two domain types whose JSON is written by hand:
//! [`Discount`] (an internally tagged enum in JSON, a plain enum in bincode)
//! and [`Timestamp`] (an RFC 3339 string in JSON, a u64 in bincode). The
//! domain derives `ToSchema` for everything else.

use crate::domain::coupon::Discount;
use crate::domain::time::Timestamp;
use std::borrow::Cow;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// What a coupon takes off an order: a fixed amount of KRW
/// (1..=100,000,000) or a percentage (1..=100) rounded down to whole KRW.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[allow(dead_code)] // describes Discount's JSON; never built
enum DiscountJson {
    Fixed {
        #[schema(minimum = 1, maximum = 100_000_000)]
        amount: u64,
    },
    Percent {
        #[schema(minimum = 1, maximum = 100)]
        percent: u8,
    },
}

impl PartialSchema for Discount {
    fn schema() -> RefOr<Schema> {
        DiscountJson::schema()
    }
}

impl ToSchema for Discount {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Discount")
    }
}

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some(
                "An RFC 3339 time in UTC, e.g. 2026-11-24T02:42:00.000Z",
            ))
            .into()
    }
}

impl ToSchema for Timestamp {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Timestamp")
    }
}
