//! The metric names a PromQL expression reads, found by a small tokenizer:
//! every identifier that is not a function or aggregation (followed by `(`,
//! or by `by`/`without` and its grouping), a keyword, a label (inside `{…}`
//! or a `by`/`without`/`on`/`ignoring`/`group_*` list), a duration (inside
//! `[…]`), a number or a Grafana variable (`$x`).

use std::collections::BTreeSet;

const KEYWORDS: &[&str] =
    &["and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"];
/// Keywords followed by a list of label names.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names `expr` reads.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Inside `{…}` (label matchers) or `[…]` (ranges): nothing there is a metric.
    let mut depth_braces = 0usize;
    // Inside the `(…)` after a label-list keyword: the paren depth it opened at.
    let mut label_list: Option<usize> = None;
    let mut parens = 0usize;
    let mut after_list_keyword = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                continue;
            }
            '{' | '[' => depth_braces += 1,
            '}' | ']' => depth_braces = depth_braces.saturating_sub(1),
            '(' => {
                parens += 1;
                if after_list_keyword {
                    label_list = Some(parens);
                    after_list_keyword = false;
                }
            }
            ')' => {
                if label_list == Some(parens) {
                    label_list = None;
                }
                parens = parens.saturating_sub(1);
            }
            '$' => {
                // A Grafana variable: `$x`, `${x}` (its braces are skipped as a matcher would be).
                i += 1;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                continue;
            }
            c if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                continue;
            }
            c if ident_start(c) => {
                let start = i;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let rest: String = chars[i..].iter().collect();
                let rest = rest.trim_start();
                // `sum by (…) (…)`: an aggregation, its grouping first.
                let grouped =
                    ["by", "without"].iter().any(|k| rest.strip_prefix(k).is_some_and(|r| !r.starts_with(ident_char)));
                if LABEL_LISTS.contains(&word.as_str()) {
                    after_list_keyword = true;
                } else if depth_braces == 0
                    && label_list.is_none()
                    && !rest.starts_with('(')
                    && !grouped
                    && !KEYWORDS.contains(&word.as_str())
                {
                    names.insert(word);
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// The expression inside a Grafana `label_values(expr, label)` variable
/// query (`label_values(label)` reads no metric).
pub fn label_values_expr(query: &str) -> Option<&str> {
    let inner = query.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    Some(inner.rsplit_once(',').map_or("", |(expr, _label)| expr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(e: &str) -> Vec<String> {
        metric_names(e).into_iter().collect()
    }

    #[test]
    fn finds_only_metric_names() {
        assert_eq!(
            names(
                r#"sum by (k8s_namespace, kind) (rate(observer_records_total{instance=~"$instance", a="b(c)"}[$__rate_interval]))"#
            ),
            ["observer_records_total"]
        );
        assert_eq!(
            names(
                "sum by (instance) (process_resident_memory_bytes{x=\"1\"}) / 2^30 + on(instance) group_left(version) observer_build_info"
            ),
            ["observer_build_info", "process_resident_memory_bytes"]
        );
        assert_eq!(names("increase(a_total[5m]) > 0 or b offset 1h and bool c"), ["a_total", "b", "c"]);
        assert_eq!(names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))"), ["x_bucket"]);
    }

    #[test]
    fn reads_label_values() {
        assert_eq!(label_values_expr("label_values(observer_build_info, instance)"), Some("observer_build_info"));
        assert_eq!(label_values_expr("label_values(instance)"), Some(""));
        assert_eq!(label_values_expr("query_result(up)"), None);
    }
}
