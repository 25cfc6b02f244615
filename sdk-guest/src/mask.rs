//! Masking helpers for policies: each keeps a text cell text, so a masked result has
//! the same column types as the clear one.

use crate::{Row, Value};

/// "Ada Lovelace" → "A. L."
pub fn initials(name: &str) -> String {
    name.split_whitespace()
        .filter_map(|word| word.chars().next())
        .map(|initial| format!("{initial}."))
        .collect::<Vec<_>>()
        .join(" ")
}

/// "123-45-6789" → "***-**-6789": only the last four digits stay readable.
pub fn last_four_digits(identifier: &str) -> String {
    let digits: Vec<char> = identifier.chars().filter(char::is_ascii_digit).collect();
    let shown: String = digits[digits.len().saturating_sub(4)..].iter().collect();
    format!("***-**-{shown}")
}

/// Replaces the text in column `index` of every row with `mask(text)`; NULLs and
/// non-text cells stay as they are.
pub fn mask_text_column(rows: &mut [Row], index: usize, mask: impl Fn(&str) -> String) {
    for row in rows {
        if let Some(Value::Text(text)) = row.get_mut(index) {
            *text = mask(text);
        }
    }
}
