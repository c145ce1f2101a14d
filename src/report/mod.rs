//! What the main command tells the user besides the model: a human table of the groups
//! (channels kept of total, MACs before and after) and SVG plots (keep ratio per group; the
//! search curve). The JSON report is assembled in `main.rs`.

mod plots;

pub use plots::{plot_curve, plot_joint_ratios, plot_keep_ratios, plot_latency_layers};

/// One row of the human table.
#[derive(Clone, Debug)]
pub struct GroupLine {
    pub key: String,
    pub kept: usize,
    pub channels: usize,
    pub macs_before: u64,
    pub macs_after: u64,
    /// Why the group cannot be pruned, if so.
    pub declined: Option<String>,
}

/// The groups as a Markdown table (also readable as plain text).
pub fn table(rows: &[GroupLine]) -> String {
    let key_w = rows
        .iter()
        .map(|r| r.key.len())
        .max()
        .unwrap_or(5)
        .clamp(5, 48);
    let mut s = format!(
        "| {:<key_w$} | {:>13} | {:>6} | {:>13} | {:>13} |\n|{}|---------------|--------|---------------|---------------|\n",
        "group",
        "kept/channels",
        "kept",
        "MACs before",
        "MACs after",
        "-".repeat(key_w + 2)
    );
    for r in rows {
        let mut key = r.key.clone();
        if key.chars().count() > key_w {
            key = key.chars().take(key_w - 1).collect::<String>() + "…";
        }
        s += &format!(
            "| {:<key_w$} | {:>13} | {:>5.0}% | {:>13} | {:>13} |{}\n",
            key,
            format!("{}/{}", r.kept, r.channels),
            100.0 * r.kept as f64 / r.channels.max(1) as f64,
            group_digits(r.macs_before),
            group_digits(r.macs_after),
            r.declined
                .as_deref()
                .map(|d| format!(" declined: {d}"))
                .unwrap_or_default()
        );
    }
    s
}

/// 1234567 → "1,234,567".
/// A progress bar `[#####-----]` of `width` cells for `done` of `total`.
pub fn bar(done: usize, total: usize, width: usize) -> String {
    let d = (done * width)
        .checked_div(total)
        .unwrap_or(width)
        .min(width);
    format!("[{}{}]", "#".repeat(d), "-".repeat(width - d))
}

pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_one_line_per_group_and_percentages() {
        let t = table(&[
            GroupLine {
                key: "conv1".into(),
                kept: 8,
                channels: 16,
                macs_before: 1_000_000,
                macs_after: 500_000,
                declined: None,
            },
            GroupLine {
                key: "head".into(),
                kept: 10,
                channels: 10,
                macs_before: 640,
                macs_after: 640,
                declined: Some("graph output".into()),
            },
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[2].contains("8/16") && lines[2].contains("50%"));
        assert!(lines[2].contains("1,000,000") && lines[2].contains("500,000"));
        assert!(lines[3].contains("declined: graph output"));
        assert_eq!(group_digits(62_485_040), "62,485,040");
    }
}
