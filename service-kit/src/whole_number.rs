//! JSON integers as the OpenAPI document defines them. It types counts and cents as
//! `integer`, and JSON Schema (which OpenAPI 3.1 uses) counts `5.0` as the integer 5; serde
//! would read it as a float and refuse it. Fractions and values beyond i64 stay refused (422).

use std::fmt;

use serde::de::{self, Deserializer, Unexpected, Visitor};

/// For `#[serde(deserialize_with = "whole_number::i64")]`.
pub fn i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(WholeNumber)
}

struct WholeNumber;

/// 2^63: the first float past i64::MAX (i64::MIN is -2^63 exactly).
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

impl Visitor<'_> for WholeNumber {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer in i64's range")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        if v.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&v) {
            Ok(v as i64) // whole and in range: exact
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Count {
        #[serde(deserialize_with = "super::i64")]
        n: i64,
    }

    fn parse(json: &str) -> Result<i64, serde_json::Error> {
        serde_json::from_str::<Count>(json).map(|c| c.n)
    }

    #[test]
    fn whole_numbers_are_read_however_they_are_written() {
        for (json, n) in [
            (r#"{"n": 5}"#, 5),
            (r#"{"n": -5}"#, -5),
            (r#"{"n": 5.0}"#, 5),
            (r#"{"n": 5e2}"#, 500),
            (r#"{"n": -9223372036854775808}"#, i64::MIN),
            (r#"{"n": 9223372036854775807}"#, i64::MAX),
        ] {
            assert_eq!(parse(json).expect(json), n);
        }
    }

    #[test]
    fn fractions_strings_and_values_beyond_i64_are_data_errors() {
        for json in [
            r#"{"n": 1.5}"#,
            r#"{"n": "5"}"#,
            r#"{"n": null}"#,
            r#"{"n": 9223372036854775808}"#,
            r#"{"n": 9.3e18}"#,
            r#"{"n": -9.3e18}"#,
        ] {
            let error = parse(json).expect_err(json);
            // A data error, which the API answers with 422.
            assert!(error.is_data(), "{json}: {error}");
        }
    }
}
