//! "Did you mean ...?" for a mistyped name: the known name closest to it, when it is close
//! enough to be a typo. clap suggests for its own subcommands, flags and listed values; this
//! covers the values it cannot list (`--policy` names next to paths, `--reg` names, `man`'s
//! commands).

/// `; did you mean `NAME`?` for the known name closest to `given`, when one is close enough
/// to be a typo (an edit distance of at most a third of its length, and at least 1), else "".
pub fn did_you_mean<S: AsRef<str>>(given: &str, known: &[S]) -> String {
    let given_lower = given.to_ascii_lowercase();
    known
        .iter()
        .map(|name| {
            (
                edit_distance(&given_lower, &name.as_ref().to_ascii_lowercase()),
                name.as_ref(),
            )
        })
        .filter(|(distance, name)| *distance <= (name.chars().count() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| format!("; did you mean `{name}`?"))
        .unwrap_or_default()
}

/// The edit distance between `a` and `b` in characters, a swap of two neighbours counting as
/// one edit (optimal string alignment: `rnu` is one edit from `run`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: the distance between the first i characters of a and the first j of b.
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policies `--policy` takes by name.
    const POLICY_NAMES: [&str; 2] = ["strict", "strict-bpf"];
    const REGISTER_NAMES: [&str; 3] = ["rax", "rbx", "rcx"];

    #[test]
    fn edit_distances() {
        // Worked by hand: one substitution, one swap, one insertion, one deletion, none.
        for (a, b, distance) in [
            ("strcit", "strict", 1),
            ("rnu", "run", 1),
            ("stric", "strict", 1),
            ("strictt", "strict", 1),
            ("strict", "strict", 0),
            ("", "abc", 3),
            ("kitten", "sitting", 3),
        ] {
            assert_eq!(edit_distance(a, b), distance, "{a} {b}");
            assert_eq!(edit_distance(b, a), distance, "{b} {a}");
        }
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(
            did_you_mean("strcit", &POLICY_NAMES),
            "; did you mean `strict`?"
        );
        assert_eq!(
            did_you_mean("STRICT-BFP", &POLICY_NAMES),
            "; did you mean `strict-bpf`?"
        );
        assert_eq!(did_you_mean("seccomp", &POLICY_NAMES), "");
        assert_eq!(
            did_you_mean("rbz", &REGISTER_NAMES),
            "; did you mean `rbx`?"
        );
        assert_eq!(did_you_mean("xyz", &REGISTER_NAMES), "");
    }
}
