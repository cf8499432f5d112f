//! What a job line means never depends on how it arrived (bytejail issue 13): every line read
//! by [`read_line`] and parsed by [`parse_line`], in pieces of any size, gives the job (code,
//! input, options, group, id) or the error that the whole line gives when serde_json parses it
//! into a tree of values and its fields are read from that tree, `input_hex` decoded by a
//! decoder of this file's own.

use std::io::Read;

use proptest::prelude::*;

use super::*;

/// A reader that hands out its text in pieces of the given sizes, in turn (a `BufReader` over
/// it gets one piece, or what its buffer has room for, per `fill_buf`).
struct Pieces<'a> {
    text: &'a [u8],
    sizes: &'a [usize],
    next: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.next % self.sizes.len()].max(1);
        self.next += 1;
        let n = size.min(out.len()).min(self.text.len());
        out[..n].copy_from_slice(&self.text[..n]);
        self.text = &self.text[n..];
        Ok(n)
    }
}

/// A job, comparable: code, input, options, group.
type JobParts = (Vec<u8>, Vec<u8>, RunOptions, Option<String>);

/// What one line that is not blank gives.
#[derive(Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a test's few values, compared: boxing would only make them harder to match"
)]
enum Got {
    /// The line's id and its job, or the error line's message.
    Job(Value, Result<JobParts, String>),
    /// The line was over the limit.
    Refused(String),
}

fn parts(parsed: Result<(Value, Job), (Value, String)>) -> Got {
    match parsed {
        Ok((id, job)) => Got::Job(
            id,
            Ok((
                job.code.to_vec(),
                job.input,
                job.options.into_owned(),
                job.group,
            )),
        ),
        Err((id, e)) => Got::Job(id, Err(e)),
    }
}

/// The lines of `text` as the batch reads them: in pieces of `sizes` through a `BufReader` of
/// `capacity`, at most `max` bytes a line, blank lines skipped, each parsed by
/// [`parse_line`] with the one [`Codes`] a job thread keeps from line to line.
fn read_in_pieces(
    text: &[u8],
    sizes: &[usize],
    capacity: usize,
    max: usize,
    defaults: &RunOptions,
) -> Vec<Got> {
    let pieces = Pieces {
        text,
        sizes,
        next: 0,
    };
    let mut input = io::BufReader::with_capacity(capacity, pieces);
    let cache = CodeCache::default();
    let mut codes = Codes::new(&cache);
    let mut buf = Vec::new();
    let mut got = Vec::new();
    while let Some(line) = read_line(&mut input, max, &mut buf).expect("a slice reads") {
        match line {
            Line::Text(text) if is_blank(&text) => continue,
            Line::Text(text) => got.push(parts(parse_line(text, defaults, &mut codes))),
            Line::Refused(why) => got.push(Got::Refused(why)),
        }
    }
    got
}

/// Hex digits decoded by this file's own decoder: `None` unless `text` is an even run of hex
/// digits, either case, and nothing else.
fn own_decode(text: &str) -> Option<Vec<u8>> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let text = text.as_bytes();
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// How the reference decodes `input_hex` when it is a plain run of digits: right, or (for the
/// twin that shows the comparison bites) with its first byte wrong.
#[derive(Clone, Copy, PartialEq)]
enum Decode {
    Right,
    Wrong,
}

/// What one whole line (its `\n` and one `\r` before it taken off) gives: the line parsed by
/// serde_json into a tree of values, its fields read from the tree, and a plain `input_hex`
/// decoded by [`own_decode`].
fn whole_line(line: &[u8], defaults: &RunOptions, decode: Decode) -> Got {
    let cache = CodeCache::default();
    let parsed = JobLine::parse_as_tree(line)
        .map_err(|e| (Value::Null, e))
        .and_then(|job_line| job_of(job_line, defaults, &mut Codes::new(&cache)));
    let mut got = parts(parsed);
    if let Got::Job(_, Ok((_, input, _, _))) = &mut got {
        let tree: Value = serde_json::from_slice(line).expect("a job's line is JSON");
        if let Some(mut own) = tree["input_hex"].as_str().and_then(own_decode) {
            if decode == Decode::Wrong && !own.is_empty() {
                own[0] ^= 1;
            }
            *input = own;
        }
    }
    got
}

/// What the lines of `text` give read whole: split at each `\n`, a line over `max` bytes
/// (without its `\n` or `\r\n`) refused with the bytes it took, blank lines skipped.
fn whole_lines(text: &[u8], max: usize, defaults: &RunOptions, decode: Decode) -> Vec<Got> {
    let mut got = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (raw, line) = match find_byte(b'\n', rest) {
            Some(end) => (&rest[..=end], &rest[..end]),
            None => (rest, rest),
        };
        rest = &rest[raw.len()..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > max {
            got.push(Got::Refused(format!(
                "the line is over {max} bytes (8 x (--max-code + --max-input) + 64KiB); \
                 it is {} bytes",
                raw.len()
            )));
        } else if !std::str::from_utf8(line).is_ok_and(|text| text.trim().is_empty()) {
            got.push(whole_line(line, defaults, decode));
        }
    }
    got
}

/// Compares the two, line by line: the first line that differs, shortened, as the error.
fn compare(
    text: &[u8],
    sizes: &[usize],
    capacity: usize,
    max: usize,
    decode: Decode,
) -> Result<(), String> {
    let defaults = RunOptions::default();
    let read = read_in_pieces(text, sizes, capacity, max, &defaults);
    let whole = whole_lines(text, max, &defaults, decode);
    if read.len() != whole.len() {
        return Err(format!(
            "{} lines read in pieces, {} whole",
            read.len(),
            whole.len()
        ));
    }
    for (index, (read, whole)) in read.iter().zip(&whole).enumerate() {
        if read != whole {
            let short = |got: &Got| {
                let text = format!("{got:?}");
                text.chars().take(600).collect::<String>()
            };
            return Err(format!(
                "line {index}: in pieces {}\nwhole {}",
                short(read),
                short(whole)
            ));
        }
    }
    Ok(())
}

/// The letters' case of a generated run of digits.
#[derive(Clone, Copy, Debug)]
enum Case {
    Lower,
    Upper,
    /// Only `0`-`9` in the first half, upper case letters after.
    DigitsThenUpper,
    /// Lower case in the first half, upper after.
    Mixed,
}

/// Where a flaw goes in a run of digits.
#[derive(Clone, Copy, Debug)]
enum Place {
    Start,
    Middle,
    /// In place of the last digit.
    Last,
    /// After the last digit, right before the closing quote.
    End,
    /// Before digit `n` (modulo the length).
    At(usize),
}

/// A flaw in a run of digits.
#[derive(Clone, Debug)]
enum Flaw {
    None,
    /// One more digit: an odd run.
    Odd,
    /// These bytes put in (`\u0030`, `\"`, a non-hex byte, a non-UTF-8 byte, ...).
    Insert(&'static [u8], Place),
    /// The digit there replaced by this byte.
    Replace(u8, Place),
}

/// A run of digits for a hex string.
#[derive(Clone, Debug)]
struct Hex {
    len: usize,
    case: Case,
    flaw: Flaw,
    seed: u8,
}

impl Hex {
    fn text(&self) -> Vec<u8> {
        const LOWER: &[u8; 16] = b"0123456789abcdef";
        let mut digits: Vec<u8> = (0..self.len)
            .map(|i| {
                let value = (i * 7 + usize::from(self.seed) * 13 + i / 5) % 16;
                let first_half = i < self.len / 2;
                match self.case {
                    Case::Lower => LOWER[value],
                    Case::Upper => LOWER[value].to_ascii_uppercase(),
                    Case::DigitsThenUpper if first_half => LOWER[value % 10],
                    Case::DigitsThenUpper => LOWER[value].to_ascii_uppercase(),
                    Case::Mixed if first_half => LOWER[value],
                    Case::Mixed => LOWER[value].to_ascii_uppercase(),
                }
            })
            .collect();
        let at = |place: Place, len: usize| match place {
            Place::Start => 0,
            Place::Middle => len / 2,
            Place::Last => len.saturating_sub(1),
            Place::End => len,
            Place::At(n) => n % (len + 1),
        };
        match self.flaw {
            Flaw::None => {}
            Flaw::Odd => digits.push(b'7'),
            Flaw::Insert(bytes, place) => {
                let at = at(place, digits.len());
                digits.splice(at..at, bytes.iter().copied());
            }
            Flaw::Replace(byte, place) => {
                let at = at(place, digits.len());
                match digits.get_mut(at) {
                    Some(digit) => *digit = byte,
                    None => digits.push(byte),
                }
            }
        }
        digits
    }
}

/// JSON whitespace, as a line may have it around a colon.
const SPACES: [&str; 4] = ["", " ", "\t", " \t\r "];

/// A job line's field.
#[derive(Clone, Debug)]
enum Field {
    Id(Id),
    Code(Code),
    /// `input_hex`, its key spelled with an escape or not, whitespace around the colon.
    Input {
        escaped_key: bool,
        before: usize,
        after: usize,
        hex: Hex,
    },
    /// `"regs":{"input_hex":"..."}`: the key nested.
    Regs(Hex),
    /// `"group":"a\"input_hex\":\"..."`: the key inside another string.
    Group(Hex),
    /// `"x\"input_hex":"..."`: a key whose raw text ends in `"input_hex"`.
    KeyEndingInKey(Hex),
    Timeout(u8),
    Entry(u8),
    /// `input_hex` that is no run of digits: `null`, a number, an array, digits in pairs
    /// apart (the general parser's), or with an escape.
    InputOther(usize, Hex),
    /// A field with an escape in its string (the line is then read as a tree of values).
    Escaped,
}

#[derive(Clone, Debug)]
enum Id {
    Number(u16),
    /// A string with a byte that is not UTF-8.
    NotUtf8,
    /// `{"input_hex":"..."}`.
    Object(Hex),
    /// `"\"input_hex\":\"...\""`.
    QuotedKey(Hex),
}

#[derive(Clone, Debug)]
enum Code {
    Short,
    /// `90` this many times, then `c3`.
    Long(usize),
    /// Not hex.
    Bad,
}

impl Field {
    fn write(&self, line: &mut Vec<u8>) {
        let hex = |line: &mut Vec<u8>, hex: &Hex| line.extend_from_slice(&hex.text());
        match self {
            Field::Id(Id::Number(n)) => line.extend_from_slice(format!(r#""id":{n}"#).as_bytes()),
            Field::Id(Id::NotUtf8) => line.extend_from_slice(b"\"id\":\"a\xffb\""),
            Field::Id(Id::Object(h)) => {
                line.extend_from_slice(br#""id":{"input_hex":""#);
                hex(line, h);
                line.extend_from_slice(br#""}"#);
            }
            Field::Id(Id::QuotedKey(h)) => {
                line.extend_from_slice(br#""id":"\"input_hex\":\""#);
                hex(line, h);
                line.extend_from_slice(br#"\"""#);
            }
            Field::Code(Code::Short) => line.extend_from_slice(br#""code_hex":"b02ac3""#),
            Field::Code(Code::Long(n)) => {
                line.extend_from_slice(br#""code_hex":""#);
                line.extend_from_slice("90".repeat(*n).as_bytes());
                line.extend_from_slice(br#"c3""#);
            }
            Field::Code(Code::Bad) => line.extend_from_slice(br#""code_hex":"b0 zz""#),
            Field::Input {
                escaped_key,
                before,
                after,
                hex: h,
            } => {
                let key = if *escaped_key {
                    r#""input\u005fhex""#
                } else {
                    r#""input_hex""#
                };
                let (before, after) = (SPACES[before % 4], SPACES[after % 4]);
                line.extend_from_slice(format!("{key}{before}:{after}\"").as_bytes());
                hex(line, h);
                line.push(b'"');
            }
            Field::Regs(h) => {
                line.extend_from_slice(br#""regs":{"input_hex":""#);
                hex(line, h);
                line.extend_from_slice(br#""}"#);
            }
            Field::Group(h) => {
                line.extend_from_slice(br#""group":"a\"input_hex\":\""#);
                hex(line, h);
                line.push(b'"');
            }
            Field::KeyEndingInKey(h) => {
                line.extend_from_slice(br#""x\"input_hex":""#);
                hex(line, h);
                line.push(b'"');
            }
            Field::Timeout(ms) => {
                line.extend_from_slice(format!(r#""timeout_ms":{ms}"#).as_bytes())
            }
            Field::Entry(at) => line.extend_from_slice(format!(r#""entry":{at}"#).as_bytes()),
            Field::InputOther(kind, h) => {
                line.extend_from_slice(br#""input_hex":"#);
                match kind % 5 {
                    0 => line.extend_from_slice(b"null"),
                    1 => line.extend_from_slice(b"12"),
                    2 => line.extend_from_slice(br#"["ab"]"#),
                    3 => {
                        line.push(b'"');
                        for pair in h.text().chunks(2) {
                            line.extend_from_slice(pair);
                            line.push(b' ');
                        }
                        line.push(b'"');
                    }
                    _ => {
                        line.extend_from_slice(br#""ab"#);
                        hex(line, h);
                        line.push(b'"');
                    }
                }
            }
            Field::Escaped => line.extend_from_slice(br#""group":"g\n\u00e9""#),
        }
    }
}

/// What surrounds a line's fields.
#[derive(Clone, Debug)]
enum Shape {
    /// No fields, nothing but this (whitespace of one kind or another, blank or not).
    Blank(&'static str),
    Object,
    /// `{...} "input_hex":"..."`: the key after the object's end.
    KeyAfterEnd(Hex),
    /// The object never closed.
    Unclosed,
    /// `[{...}]`.
    Array,
}

#[derive(Clone, Debug)]
struct LineSpec {
    fields: Vec<Field>,
    shape: Shape,
    crlf: bool,
}

impl LineSpec {
    /// The line without its end.
    fn text(&self) -> Vec<u8> {
        if let Shape::Blank(text) = self.shape {
            return text.as_bytes().to_vec();
        }
        let mut line = Vec::new();
        if matches!(self.shape, Shape::Array) {
            line.push(b'[');
        }
        line.push(b'{');
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            field.write(&mut line);
        }
        match &self.shape {
            Shape::Object => line.push(b'}'),
            Shape::KeyAfterEnd(h) => {
                line.extend_from_slice(br#"} "input_hex":""#);
                line.extend_from_slice(&h.text());
                line.push(b'"');
            }
            Shape::Unclosed | Shape::Blank(_) => {}
            Shape::Array => line.extend_from_slice(b"}]"),
        }
        line
    }
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        Just(Place::Start),
        Just(Place::Middle),
        Just(Place::Last),
        Just(Place::End),
        any::<usize>().prop_map(Place::At),
    ]
}

/// Digit counts around every threshold the reader and the decoder have: none, a few, the long
/// hex field ([`LONG_HEX`]), a slice of [`load::HexRun`] and two, [`load::POPULATE_FROM`],
/// and anything up to a few hundred KiB.
fn hex() -> impl Strategy<Value = Hex> {
    let len = prop_oneof![
        3 => 0..8usize,
        2 => 8..200usize,
        1 => (LONG_HEX - 6)..(LONG_HEX + 6),
        2 => (load::HexRun::SLICE - 6)..(load::HexRun::SLICE + 6),
        1 => (2 * load::HexRun::SLICE - 4)..(2 * load::HexRun::SLICE + 4),
        1 => (load::POPULATE_FROM - 4)..(load::POPULATE_FROM + 4),
        2 => 200..(300usize << 10),
    ];
    let case = prop_oneof![
        3 => Just(Case::Lower),
        3 => Just(Case::Upper),
        1 => Just(Case::DigitsThenUpper),
        1 => Just(Case::Mixed),
    ];
    let inserted: [&'static [u8]; 8] = [
        b"g",
        b"G",
        b" ",
        b"\\u0030",
        b"\\\"",
        b"\\\\",
        b"\xff",
        "\u{e9}".as_bytes(),
    ];
    let flaw = prop_oneof![
        10 => Just(Flaw::None),
        1 => Just(Flaw::Odd),
        2 => (proptest::sample::select(inserted.to_vec()), place())
            .prop_map(|(bytes, place)| Flaw::Insert(bytes, place)),
        2 => (
            proptest::sample::select(vec![b'g', b'x', b' ', b'"', 0x01, 0x7f, 0xff, b'F', b'f']),
            place()
        )
            .prop_map(|(byte, place)| Flaw::Replace(byte, place)),
    ];
    (len, case, flaw, any::<u8>()).prop_map(|(len, case, flaw, seed)| Hex {
        len,
        case,
        flaw,
        seed,
    })
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        4 => any::<u16>().prop_map(|n| Field::Id(Id::Number(n))),
        1 => Just(Field::Id(Id::NotUtf8)),
        1 => hex().prop_map(|h| Field::Id(Id::Object(h))),
        1 => hex().prop_map(|h| Field::Id(Id::QuotedKey(h))),
        3 => Just(Field::Code(Code::Short)),
        1 => (0..40_000usize).prop_map(|n| Field::Code(Code::Long(n))),
        1 => Just(Field::Code(Code::Bad)),
        8 => (prop::bool::weighted(0.15), 0..4usize, 0..4usize, hex()).prop_map(
            |(escaped_key, before, after, hex)| Field::Input {
                escaped_key,
                before,
                after,
                hex,
            }
        ),
        1 => hex().prop_map(Field::Regs),
        1 => hex().prop_map(Field::Group),
        1 => hex().prop_map(Field::KeyEndingInKey),
        1 => (0..5u8).prop_map(Field::Timeout),
        1 => (0..5u8).prop_map(Field::Entry),
        2 => (0..5usize, hex()).prop_map(|(kind, h)| Field::InputOther(kind, h)),
        1 => Just(Field::Escaped),
    ]
}

fn line_spec() -> impl Strategy<Value = LineSpec> {
    let shape = prop_oneof![
        8 => Just(Shape::Object),
        1 => hex().prop_map(Shape::KeyAfterEnd),
        1 => Just(Shape::Unclosed),
        1 => Just(Shape::Array),
        1 => proptest::sample::select(vec!["", " ", "\t\r", "\u{3000}", "\u{feff}", "\x0c"])
            .prop_map(Shape::Blank),
    ];
    // Most lines are jobs with code and an `input_hex` (so that most runs of digits are
    // decoded as they are read and end up in a job), in any order among the other fields.
    let input = (prop::bool::weighted(0.1), 0..4usize, 0..4usize, hex()).prop_map(
        |(escaped_key, before, after, hex)| Field::Input {
            escaped_key,
            before,
            after,
            hex,
        },
    );
    let fields = (
        prop::bool::weighted(0.9),
        proptest::option::weighted(0.9, input),
        proptest::collection::vec(field(), 0..3),
    )
        .prop_map(|(code, input, mut fields)| {
            fields.extend(code.then_some(Field::Code(Code::Short)));
            fields.extend(input);
            fields
        })
        .prop_shuffle();
    (fields, shape, any::<bool>()).prop_map(|(fields, shape, crlf)| LineSpec {
        fields,
        shape,
        crlf,
    })
}

/// Read sizes from one byte to 64 KiB, small ones often.
fn sizes() -> impl Strategy<Value = Vec<usize>> {
    let size = prop_oneof![
        2 => 1..=16usize,
        2 => 17..=4096usize,
        2 => 4097..=(64usize << 10),
    ];
    proptest::collection::vec(size, 1..8)
}

/// The text of some lines: each with its end, but the last maybe without.
fn text_of(lines: &[LineSpec], last_ends: bool) -> Vec<u8> {
    let mut text = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        text.extend_from_slice(&line.text());
        if i + 1 < lines.len() || last_ends {
            text.extend_from_slice(if line.crlf { b"\r\n" } else { b"\n" });
        }
    }
    text
}

/// 256 cases a property, more with PROPTEST_CASES (a long hunt: PROPTEST_CASES=20000).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Lines from the grammar above, read in pieces of any size, mean what they mean whole;
    /// `max` far above them or at one line's length, give or take two bytes.
    #[test]
    fn a_line_means_what_it_means_whole_however_it_arrives(
        lines in proptest::collection::vec(line_spec(), 1..4),
        last_ends in any::<bool>(),
        sizes in sizes(),
        capacity in prop_oneof![Just(8usize << 10), Just(64usize << 10), Just(128usize << 10)],
        at_limit in proptest::option::weighted(0.3, (any::<prop::sample::Index>(), -2i64..=1)),
    ) {
        let text = text_of(&lines, last_ends);
        let max = match at_limit {
            None => 4 << 20,
            Some((which, over)) => {
                let line = lines[which.index(lines.len())].text();
                usize::try_from(line.len() as i64 + over).unwrap_or(0)
            }
        };
        if let Err(e) = compare(&text, &sizes, capacity, max, Decode::Right) {
            let shown: String = String::from_utf8_lossy(&text).chars().take(400).collect();
            prop_assert!(false, "{e}\nmax {max}, sizes {sizes:?}, capacity {capacity}\n{shown}");
        }
    }
}

/// The comparison bites: a reference whose decode of a plain `input_hex` is wrong differs from
/// the reader, short line or long, in pieces or whole.
#[test]
fn the_comparison_sees_a_wrong_decode() {
    for len in [2, 200, 20_000, 300_000] {
        let line = format!(
            r#"{{"id":1,"code_hex":"b02ac3","input_hex":"{}"}}"#,
            "a5".repeat(len / 2)
        );
        for sizes in [&[1][..], &[7, 4096], &[65536]] {
            let text = line.as_bytes();
            assert_eq!(
                compare(text, sizes, 64 << 10, 4 << 20, Decode::Right),
                Ok(())
            );
            assert!(compare(text, sizes, 64 << 10, 4 << 20, Decode::Wrong).is_err());
        }
    }
}

/// A repeated hex field keeps its last value; a long one it replaced (`LONG_HEX` bytes and
/// more, looked at only after the line is parsed) that is not UTF-8, or holds a control
/// character, still makes the line what serde_json makes it: not a job. Found by the property
/// above: the replaced value was never looked at, and the line ran.
#[test]
fn a_replaced_long_hex_field_is_still_checked() {
    let long = "ab".repeat(LONG_HEX);
    for field in ["input_hex", "code_hex"] {
        for bad in [&b"\xff"[..], b"\x01", b"\x1f"] {
            let mut line = format!(r#"{{"id":1,"code_hex":"c3","{field}":""#).into_bytes();
            line.extend_from_slice(bad);
            line.extend_from_slice(long.as_bytes());
            line.extend_from_slice(format!(r#"","{field}":"c3"}}"#).as_bytes());
            let defaults = RunOptions::default();
            let whole = whole_line(&line, &defaults, Decode::Right);
            assert!(matches!(&whole, Got::Job(Value::Null, Err(_))), "{whole:?}");
            let cache = CodeCache::default();
            let parsed = parse_job(&line, &defaults, &mut Codes::new(&cache));
            assert_eq!(parts(parsed), whole, "{field} {bad:?}");
            assert_eq!(
                compare(&line, &[1], 8 << 10, 4 << 20, Decode::Right),
                Ok(())
            );
        }
    }
}

/// A job line with `digits` as its `input_hex`, then where its key starts and its digits start.
fn job_line(spaces: (&str, &str), digits: &str) -> (String, usize, usize) {
    let head = r#"{"id":1,"code_hex":"b02ac3","#;
    let key = format!(r#""input_hex"{}:{}""#, spaces.0, spaces.1);
    let line = format!(r#"{head}{key}{digits}","timeout_ms":5}}"#);
    (line, head.len(), head.len() + key.len())
}

/// The lines of `text` read in pieces of `sizes`, each with whether its digits were decoded
/// as they were read, and what the lines give; checked against what they give whole.
fn read_and_compare(text: &[u8], sizes: &[usize], max: usize) -> Vec<bool> {
    let defaults = RunOptions::default();
    let pieces = Pieces {
        text,
        sizes,
        next: 0,
    };
    let mut input = io::BufReader::with_capacity(64 << 10, pieces);
    let mut buf = Vec::new();
    let cache = CodeCache::default();
    let mut streamed = Vec::new();
    let mut got = Vec::new();
    while let Some(line) = read_line(&mut input, max, &mut buf).unwrap() {
        match line {
            Line::Text(text) => {
                streamed.push(text.input.is_some());
                got.push(parts(parse_line(text, &defaults, &mut Codes::new(&cache))));
            }
            Line::Refused(why) => {
                streamed.push(false);
                got.push(Got::Refused(why));
            }
        }
    }
    assert_eq!(
        got,
        whole_lines(text, max, &defaults, Decode::Right),
        "{sizes:?}"
    );
    streamed
}

/// `"input_hex":"` cut between two reads at every place, whitespace around the colon or not:
/// the digits after it are decoded as they are read all the same, and the line means what it
/// means whole.
#[test]
fn a_key_cut_between_two_reads_anywhere_is_found() {
    let digits = "0123456789abcdef".repeat(2500);
    for spaces in [("", ""), (" ", "\t"), ("\t \r ", "  ")] {
        let (line, key, value) = job_line(spaces, &digits);
        let text = format!("{line}\n");
        for cut in key.saturating_sub(3)..=value + 3 {
            let streamed = read_and_compare(text.as_bytes(), &[cut, 999], 4 << 20);
            assert_eq!(streamed, [true], "cut at {cut} of {spaces:?}");
        }
    }
    // Whitespace longer than the reader looks across a cut: not decoded as read (a guess
    // missed), the same job.
    let (line, key, _) = job_line((&" ".repeat(40), &" ".repeat(40)), &digits);
    let text = format!("{line}\n");
    for cut in key..key + 100 {
        read_and_compare(text.as_bytes(), &[cut, 999], 4 << 20);
    }
}

/// The digits ending exactly at a read's end, the closing quote in the next read; a read's
/// end after the quote, one digit before it (a digit left waiting for its pair), and a line
/// cut off at the end of the input in its digits or right after its quote.
#[test]
fn digits_ending_at_a_reads_end_are_decoded() {
    for digits in ["ab".repeat(3000), "AB".repeat(3000) + "0", "0".repeat(6000)] {
        let (line, _, value) = job_line(("", ""), &digits);
        let quote = value + digits.len();
        for end in [quote - 3, quote - 2, quote - 1, quote, quote + 1, quote + 2] {
            for crlf in ["\n", "\r\n"] {
                let text = format!("{line}{crlf}{line}{crlf}");
                let streamed = read_and_compare(text.as_bytes(), &[end, 1 << 16], 4 << 20);
                // An odd run is put back. The second line comes whole in one read, its end
                // with it: read as it is.
                let even = digits.len() % 2 == 0;
                assert_eq!(streamed, [even, false], "{end} {}", digits.len());
                // The first line's end at the second's `quote` too.
                let second = line.len() + crlf.len() + end;
                read_and_compare(text.as_bytes(), &[second, 1 << 16], 4 << 20);
            }
        }
        for cut in [quote - 1, quote, quote + 1] {
            read_and_compare(&line.as_bytes()[..cut], &[value + 7, 5], 4 << 20);
        }
    }
}

/// A byte that is not a digit of the run just before, at and after a [`load::HexRun::SLICE`]
/// boundary of the digits, with the reads aligned to the digits or one byte off (a digit
/// waiting for its pair shifts every slice): never decoded, the same job or error.
#[test]
fn a_bad_digit_at_a_slice_boundary_is_never_taken() {
    const SLICE: usize = load::HexRun::SLICE;
    for at in [
        SLICE - 1,
        SLICE,
        SLICE + 1,
        2 * SLICE - 1,
        2 * SLICE,
        2 * SLICE + 1,
    ] {
        for bad in [&b"g"[..], b"G", b"\"", b"\\u0030", b"\\\"", b" ", b"\xff"] {
            let mut digits = "5a".repeat(SLICE + 100).into_bytes();
            digits.splice(at..at + 1, bad.iter().copied());
            let digits = String::from_utf8_lossy(&digits).into_owned();
            let (line, _, value) = job_line(("", ""), &digits);
            let text = format!("{line}\n");
            for skew in [0, 1, 3] {
                let sizes = [value + skew, 1 << 16];
                let streamed = read_and_compare(text.as_bytes(), &sizes, 4 << 20);
                // A quote after an even run ends the string there: those digits are the run.
                let ends = bad == b"\"" && at % 2 == 0;
                assert_eq!(streamed, [ends], "{at} {bad:?} {skew}");
            }
        }
    }
}

/// A line that goes over the limit in its digits is refused, read to its end without being
/// held, and the next line is read as usual; over by 0, 1 or 2 bytes with `\n` and `\r\n`.
#[test]
fn a_line_over_the_limit_in_its_digits_is_refused() {
    let digits = "c0ffee".repeat(20_000);
    let (line, _, value) = job_line(("", ""), &digits);
    let next = r#"{"id":2,"code_hex":"c3"}"#;
    for crlf in ["\n", "\r\n"] {
        let text = format!("{line}{crlf}{next}{crlf}");
        for max in [value, value + 1, value + 5000, value + 70_000] {
            for sizes in [&[value + 1, 4096][..], &[1 << 16], &[7]] {
                let streamed = read_and_compare(text.as_bytes(), sizes, max);
                assert_eq!(streamed, [false, false], "{max} {sizes:?}");
            }
            // Nothing of the refused line is held after it.
            let mut input = io::BufReader::with_capacity(8 << 10, text.as_bytes());
            let mut buf = Vec::new();
            assert!(matches!(
                read_line(&mut input, max, &mut buf).unwrap(),
                Some(Line::Refused(_))
            ));
            assert!(buf.capacity() < 16 << 10, "{}", buf.capacity());
        }
        for over in 0..=2 {
            let max = line.len() - over;
            let streamed = read_and_compare(text.as_bytes(), &[value + 1, 4096], max);
            assert_eq!(streamed[0], over == 0, "{over}");
        }
    }
}

/// One job line whose `input_hex` is `digits` digits, made as it is read (never held whole).
struct MadeLine {
    head: &'static [u8],
    digits: usize,
    tail: &'static [u8],
    at: usize,
}

impl Read for MadeLine {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            let at = self.at;
            let byte = if at < self.head.len() {
                self.head[at]
            } else if at < self.head.len() + self.digits {
                b"5a"[(at - self.head.len()) % 2]
            } else if let Some(&byte) = self.tail.get(at - self.head.len() - self.digits) {
                byte
            } else {
                break;
            };
            out[n] = byte;
            n += 1;
            self.at += 1;
        }
        Ok(n)
    }
}

/// The peak resident set of this process, in KiB (`VmHWM` in `/proc/self/status`).
fn peak_rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Where [`a_long_line_is_held_no_more_than_its_limit_allows`] asks its re-executed test
/// binary for one of its readings.
const MEMORY_CHILD: &str = "BYTEJAIL_REVIEW_READ_MEMORY";

/// In a re-executed test binary (alone in its process: the peak resident set is the process's),
/// reads a line of 64 MiB of digits with `--max-input` 1000 and `--max-code` 1000 (`refused`)
/// or `--max-code` left at 16 MiB (`held`, the twin: the line is then within its limit of
/// about 128 MiB) and prints how much the peak rose. Does nothing in the test run itself.
#[test]
fn memory_child() {
    let Some(scenario) = std::env::var_os(MEMORY_CHILD) else {
        return;
    };
    let mut defaults = RunOptions::default();
    defaults.limits.max_input = 1000;
    if scenario == "refused" {
        defaults.limits.max_code = 1000;
    }
    let max = max_line(&defaults);
    let line = MadeLine {
        head: br#"{"id":1,"code_hex":"c3","input_hex":""#,
        digits: 64 << 20,
        tail: b"\"}\n",
        at: 0,
    };
    // As the CLI reads: 128 KiB at a time.
    let mut input = io::BufReader::with_capacity(128 << 10, line);
    let before = peak_rss_kib();
    let mut buf = Vec::new();
    let what = match read_line(&mut input, max, &mut buf).unwrap() {
        Some(Line::Refused(why)) => format!("refused: {why}"),
        Some(Line::Text(text)) => {
            let decoded = text.input.as_ref().map_or(0, |(_, run)| run.bytes().len());
            let cache = CodeCache::default();
            match parse_line(text, &defaults, &mut Codes::new(&cache)) {
                Ok(_) => format!("ran, {decoded} bytes decoded as read"),
                Err((_, e)) => format!("error: {e}; {decoded} bytes decoded as read"),
            }
        }
        None => "nothing".into(),
    };
    let rise = peak_rss_kib().saturating_sub(before);
    println!("\nmemory_child rise {rise} KiB, {what}");
}

/// A line of 64 MiB of digits over its limit is refused while read, holding no more than a
/// read or two; its twin, the same line within its limit (as `--max-code` 16 MiB makes it),
/// is held (its 32 MiB decoded as read, no text of its digits) and then refused for its input:
/// the peak resident set sees the difference.
#[test]
fn a_long_line_is_held_no_more_than_its_limit_allows() {
    let exe = std::env::current_exe().expect("the test binary");
    let rise = |scenario: &str| -> (usize, String) {
        let out = std::process::Command::new(&exe)
            .args([
                "batch::read_review::memory_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(MEMORY_CHILD, scenario)
            .output()
            .expect("the test binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|line| line.strip_prefix("memory_child rise "))
            .unwrap_or_else(|| panic!("{scenario}: no reading in {stdout}"));
        let (kib, what) = line.split_once(" KiB, ").expect("a reading");
        (kib.parse().expect("KiB"), what.to_string())
    };
    let (refused, what) = rise("refused");
    let max = 8 * (1000 + 1000) + (64 << 10);
    let over = format!("refused: the line is over {max} bytes");
    assert!(what.starts_with(&over), "{what}");
    assert!(
        refused < 4 << 10,
        "{refused} KiB for a refused line: {what}"
    );
    let (held, what) = rise("held");
    assert!(
        what.starts_with("error: input_hex is 33554432 bytes")
            && what.ends_with("33554432 bytes decoded as read"),
        "{what}"
    );
    // 32 MiB decoded, and no more than a few reads besides.
    assert!(
        (30 << 10..40 << 10).contains(&held),
        "{held} KiB for a held line: {what}"
    );
}

/// The digits a run takes: hex digits with letters of one case, the first letter setting it.
fn one_case_prefix(text: &[u8]) -> usize {
    let mut upper = None;
    text.iter()
        .take_while(|&&b| match b {
            b'0'..=b'9' => true,
            b'a'..=b'f' => !*upper.get_or_insert(false),
            b'A'..=b'F' => *upper.get_or_insert(true),
            _ => false,
        })
        .count()
}

proptest! {
    #![proptest_config(config())]

    /// A string's digits taken in pieces of any size as [`read_line`] takes them: decoded
    /// (`Some(true)`) exactly when the string is an even run of one case up to its quote, into
    /// the bytes it spells; otherwise what was taken is a run of one case, given back exactly
    /// as it came, and the first byte not taken is within a slice of the run's end.
    #[test]
    fn digits_taken_in_pieces_are_the_strings_digits(
        hex in hex(),
        after in proptest::sample::select(vec![&b"\"}"[..], b"\"", b"", b"x\"", b"\\\""]),
        sizes in sizes(),
    ) {
        let text = [hex.text().as_slice(), after].concat();
        let mut run = load::HexRun::default();
        let (mut at, mut ended, mut next) = (0, None, 0);
        while at < text.len() {
            let size = sizes[next % sizes.len()];
            next += 1;
            let piece = &text[at..text.len().min(at + size)];
            let (taken, end) = take_digits(&mut run, piece);
            prop_assert!(taken <= piece.len());
            at += taken;
            if end.is_some() {
                ended = end;
                break;
            }
        }
        let run_len = one_case_prefix(&text);
        let whole = text.get(run_len) == Some(&b'"') && run_len % 2 == 0;
        prop_assert_eq!(ended == Some(true), whole);
        if whole {
            prop_assert_eq!(at, run_len);
            let digits = std::str::from_utf8(&text[..run_len]).unwrap();
            prop_assert_eq!(Some(run.into_bytes()), own_decode(digits));
        } else {
            prop_assert!(at <= run_len);
            if ended == Some(false) {
                prop_assert!(run_len - at <= load::HexRun::SLICE, "{} of {}", at, run_len);
            }
            let mut back = Vec::new();
            run.write_digits(&mut back);
            prop_assert_eq!(back.as_slice(), &text[..at]);
        }
    }
}

/// serde_json's nesting limit (128) is the same for a line read straight into its fields as
/// for the tree of values: arrays nested in `id` and `regs` around the limit, short lines and
/// long ones (a long `input_hex` after them, decoded as read).
#[test]
fn nesting_around_serde_jsons_limit_means_the_same() {
    let digits = "ab".repeat(8000);
    for depth in [125, 126, 127, 128, 129] {
        for field in ["id", "regs"] {
            let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            for input in ["", &digits] {
                let line =
                    format!(r#"{{"{field}":{nested},"code_hex":"c3","input_hex":"{input}"}}"#);
                let text = format!("{line}\n");
                for sizes in [&[1 << 16][..], &[line.len() - 100, 7]] {
                    read_and_compare(text.as_bytes(), sizes, 4 << 20);
                }
            }
        }
    }
}
