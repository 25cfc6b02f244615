//! `phi-mask`, stricter: besides initials for `name` and the last four digits of `ssn`,
//! the `region` is hidden too, unless the caller holds the role `clinician` and reads
//! for the purpose `treatment`.

use kimberlite_guest::mask::{initials, last_four_digits, mask_text_column};
use kimberlite_guest::prelude::*;

struct PhiMaskStrict;

impl Policy for PhiMaskStrict {
    fn covers() -> Vec<String> {
        vec!["patients".to_owned()]
    }

    fn mask(
        who: &Caller,
        _table: &str,
        columns: &[String],
        mut rows: Vec<Row>,
    ) -> Result<Vec<Row>, String> {
        if who.has_role("clinician") && who.purpose() == Some("treatment") {
            return Ok(rows);
        }
        if let Some(name) = column_index(columns, "name") {
            mask_text_column(&mut rows, name, initials);
        }
        if let Some(ssn) = column_index(columns, "ssn") {
            mask_text_column(&mut rows, ssn, last_four_digits);
        }
        if let Some(region) = column_index(columns, "region") {
            mask_text_column(&mut rows, region, |_| "***".to_owned());
        }
        Ok(rows)
    }
}

kimberlite_guest::export!(policy: PhiMaskStrict);
