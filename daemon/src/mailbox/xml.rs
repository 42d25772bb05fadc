//! The OQS file formats, sans IO: request bytes → the model's `CheckRequest`s (or a rejection that
//! names the element), and results → bytes. No files, no clock: times are passed in.
//!
//! - Encoding: UTF-8 or Shift_JIS, from the XML declaration (no declaration: UTF-8, XML's default).
//!   A result is written in the encoding of its request.
//! - Completeness: a file that ends before its root element is closed is [`ReadError::Incomplete`]
//!   (it may still be being written); anything else wrong is [`ReadError::Rejected`] at once.
//! - Unknown elements are tolerated (newer receipt computers may send more); missing, repeated or
//!   invalid required elements are rejected with their path, e.g.
//!   `MessageBody/QualificationConfirmSearchInfo/InsurerNumber`.
//! - Bounds: elements nested deeper than [`MAX_DEPTH`] are rejected with their path before any
//!   tree is built. [`read_request`] never panics on any input (a property test feeds it nested,
//!   huge, mis-encoded and garbage documents); should a bug make it panic all the same, the panic is
//!   caught and the file rejected, never the edge stopped.

use std::fmt::Write as _;

use chrono::{NaiveDate, NaiveDateTime};
use onshi_model::text::to_halfwidth_kana;
use onshi_model::{
    Branch, CardNumber, CardSymbol, CheckOutcome, CheckRequest, CheckSubject, InsuranceCardKey,
    InsurerNumber, Qualification, Validity, parse_date,
};
use quick_xml::events::Event;
use serde::{Deserialize, Serialize};

use super::codes::{self, Coded, Segment};

pub use super::limits::{MAX_BATCH_ENTRIES, MAX_DEPTH};

/// The character encoding of a request, and so of its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TextEncoding {
    Utf8,
    ShiftJis,
}

impl TextEncoding {
    pub fn label(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "UTF-8",
            TextEncoding::ShiftJis => "Shift_JIS",
        }
    }

    fn character_code_identifier(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => codes::CHARSET_UTF8,
            TextEncoding::ShiftJis => codes::CHARSET_SHIFT_JIS,
        }
    }

    /// An `encoding="…"` label of the XML declaration; `None` for any other encoding.
    pub fn from_label(label: &str) -> Option<TextEncoding> {
        let l = label.trim().to_ascii_lowercase().replace('-', "_");
        match l.as_str() {
            "utf_8" | "utf8" => Some(TextEncoding::Utf8),
            "shift_jis" | "shiftjis" | "sjis" | "x_sjis" | "windows_31j" | "cp932" | "ms932"
            | "ms_kanji" => Some(TextEncoding::ShiftJis),
            _ => None,
        }
    }
}

/// The three requests a receipt computer drops into `req/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestKind {
    /// `OQSsiquc01req_*.xml`: one check by insurance card.
    Single,
    /// `OQSmuquc01req_*.xml`: a batch upload, answered with a `ReceptionNumber`.
    BatchUpload,
    /// `OQSmuquc02req_*.xml`: the batch's results, by that number.
    BatchDownload,
}

impl RequestKind {
    /// The kind a file name announces (prefix case-insensitive, `_<free>.xml`); `None` otherwise.
    pub fn of_file_name(name: &str) -> Option<RequestKind> {
        let lower = name.to_ascii_lowercase();
        if !lower.ends_with(".xml") {
            return None;
        }
        [
            (codes::SINGLE_PREFIX, RequestKind::Single),
            (codes::BATCH_UPLOAD_PREFIX, RequestKind::BatchUpload),
            (codes::BATCH_DOWNLOAD_PREFIX, RequestKind::BatchDownload),
        ]
        .into_iter()
        .find(|(p, _)| lower.starts_with(&format!("{}_", p.to_ascii_lowercase())))
        .map(|(_, k)| k)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Single => "single",
            RequestKind::BatchUpload => "batch_upload",
            RequestKind::BatchDownload => "batch_download",
        }
    }
}

/// The result's file name: the request's with `req` replaced by `res` (`OQSsiquc01req_1.xml` →
/// `OQSsiquc01res_1.xml`); `None` if the name is not a request's.
pub fn result_file_name(request_name: &str) -> Option<String> {
    RequestKind::of_file_name(request_name)?;
    // The prefix is ASCII and 13 characters long; "req" is its last three.
    let (prefix, rest) = request_name.split_at(13);
    let (head, req) = prefix.split_at(10);
    let res: String = req
        .chars()
        .zip("res".chars())
        .map(|(c, r)| {
            if c.is_ascii_uppercase() {
                r.to_ascii_uppercase()
            } else {
                r
            }
        })
        .collect();
    Some(format!("{head}{res}{rest}"))
}

/// What kind of problem a rejected file has (it picks the code of the error result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectKind {
    /// Not XML, wrong or missing elements, a bad field.
    Format,
    /// An encoding other than UTF-8 or Shift_JIS, or bytes not in the declared one.
    Encoding,
    /// Another facility's request.
    Facility,
    /// Still incomplete past the timeout.
    Incomplete,
}

impl RejectKind {
    pub fn coded(self) -> Coded {
        match self {
            RejectKind::Format => codes::BAD_REQUEST,
            RejectKind::Encoding => codes::BAD_ENCODING,
            RejectKind::Facility => codes::OTHER_FACILITY,
            RejectKind::Incomplete => codes::INCOMPLETE,
        }
    }
}

/// The header fields a result echoes, as given (empty when the request did not have them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    pub confirmation_date: String,
    pub facility: String,
    pub arbitrary_id: String,
}

/// Why a file is refused: the element (path) and the reason. `message` may quote the offending
/// value: it goes to the reason file and the error result, never to a log above debug level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub kind: RejectKind,
    pub field: String,
    pub message: String,
    /// What the header said, for the error result (boxed: a rejection travels in `Err`s).
    pub echo: Box<Echo>,
}

impl Rejection {
    fn new(kind: RejectKind, field: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection {
            kind,
            field: field.into(),
            message: message.into(),
            echo: Box::default(),
        }
    }

    fn format(field: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection::new(RejectKind::Format, field, message)
    }

    /// One line for the reason file and the error result: `field: message`.
    pub fn reason(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// Reading a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The file ends before the document does: it may still be being written.
    Incomplete(String),
    Rejected(Rejection),
}

impl From<Rejection> for ReadError {
    fn from(r: Rejection) -> Self {
        ReadError::Rejected(r)
    }
}

/// A request's text, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub encoding: TextEncoding,
    pub text: String,
}

/// The header of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub echo: Echo,
    /// `QualificationConfirmationDate`: the service date of the checks.
    pub service_date: NaiveDate,
}

/// One `QualificationConfirmSearchInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchInfo {
    pub request: CheckRequest,
    /// `LimitApplicationCertificateRelatedConsFlg`: the patient consents to the limit-amount
    /// certificate being returned. (The registry has no such certificates yet.)
    pub limit_consent: bool,
}

/// A request, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OqsRequest {
    Single {
        header: Header,
        search: SearchInfo,
    },
    BatchUpload {
        header: Header,
        searches: Vec<SearchInfo>,
    },
    BatchDownload {
        header: Header,
        reception_number: String,
    },
}

impl OqsRequest {
    /// The same plausibility rule as the JSON API's (`onshi_model::plausible`): the
    /// `QualificationConfirmationDate` must lie within the service-date window around `today`
    /// (birth dates are checked against it as the request is read).
    pub fn check_plausible(&self, today: NaiveDate) -> Result<(), Rejection> {
        let header = self.header();
        onshi_model::plausible::check_service_date(
            "QualificationConfirmationDate",
            header.service_date,
            today,
        )
        .map_err(|e| Rejection {
            echo: Box::new(header.echo.clone()),
            ..Rejection::format(join(HEADER, "QualificationConfirmationDate"), e.message)
        })
    }

    pub fn header(&self) -> &Header {
        match self {
            OqsRequest::Single { header, .. }
            | OqsRequest::BatchUpload { header, .. }
            | OqsRequest::BatchDownload { header, .. } => header,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Finds the `encoding` pseudo-attribute of the XML declaration at the start of `bytes`.
/// `Ok(None)`: no declaration or no encoding in it. `Err`: the declaration is not finished yet.
fn declared_encoding(bytes: &[u8]) -> Result<Option<String>, ()> {
    if !bytes.starts_with(b"<?xml") {
        // A prefix of "<?xml" may be the start of a file still being written.
        return if !bytes.is_empty() && b"<?xml".starts_with(bytes) {
            Err(())
        } else {
            Ok(None)
        };
    }
    let head = &bytes[..bytes.len().min(1024)];
    let Some(end) = head.windows(2).position(|w| w == b"?>") else {
        return Err(());
    };
    let decl = String::from_utf8_lossy(&head[..end]);
    let Some(at) = decl.find("encoding") else {
        return Ok(None);
    };
    let rest = decl[at + "encoding".len()..].trim_start();
    let Some(rest) = rest.strip_prefix('=') else {
        return Ok(None);
    };
    let rest = rest.trim_start();
    let quote = rest.chars().next();
    Ok(match quote {
        Some(q @ ('"' | '\'')) => rest[1..].split(q).next().map(str::to_string),
        _ => None,
    })
}

/// Decodes request bytes in the encoding their declaration names.
pub fn decode(bytes: &[u8]) -> Result<Decoded, ReadError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(Rejection::new(
            RejectKind::Encoding,
            "encoding",
            "the file is UTF-16; the file interface uses UTF-8 or Shift_JIS",
        )
        .into());
    }
    let label = declared_encoding(bytes)
        .map_err(|()| ReadError::Incomplete("the XML declaration is not finished".into()))?;
    let encoding = match label {
        None => TextEncoding::Utf8,
        Some(l) => TextEncoding::from_label(&l).ok_or_else(|| {
            Rejection::new(
                RejectKind::Encoding,
                "encoding",
                format!("the declaration names {l:?}; the file interface uses UTF-8 or Shift_JIS"),
            )
        })?,
    };
    let text = match encoding {
        TextEncoding::Utf8 => match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            // The file ends inside a character: it is still being written.
            Err(e) if e.error_len().is_none() => {
                return Err(ReadError::Incomplete(
                    "the file ends inside a UTF-8 character".into(),
                ));
            }
            Err(e) => {
                return Err(Rejection::new(
                    RejectKind::Encoding,
                    "encoding",
                    format!(
                        "byte {} is not valid UTF-8 (the declaration says UTF-8)",
                        e.valid_up_to() + 1
                    ),
                )
                .into());
            }
        },
        TextEncoding::ShiftJis => {
            match encoding_rs::SHIFT_JIS.decode_without_bom_handling_and_without_replacement(bytes)
            {
                Some(s) => s.into_owned(),
                None => {
                    let shorter = &bytes[..bytes.len().saturating_sub(1)];
                    if encoding_rs::SHIFT_JIS
                        .decode_without_bom_handling_and_without_replacement(shorter)
                        .is_some()
                    {
                        return Err(ReadError::Incomplete(
                            "the file ends inside a Shift_JIS character".into(),
                        ));
                    }
                    return Err(Rejection::new(
                        RejectKind::Encoding,
                        "encoding",
                        "the bytes are not valid Shift_JIS (the declaration says Shift_JIS)",
                    )
                    .into());
                }
            }
        }
    };
    Ok(Decoded { encoding, text })
}

/// A result's text in its encoding. Characters Shift_JIS cannot hold become XML character
/// references (`&#39641;`), which any XML reader turns back into the character.
pub fn encode(text: &str, encoding: TextEncoding) -> Vec<u8> {
    match encoding {
        TextEncoding::Utf8 => text.as_bytes().to_vec(),
        TextEncoding::ShiftJis => encoding_rs::SHIFT_JIS.encode(text).0.into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The document

/// An element: its local name, its text (all text directly inside it) and its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    fn all(&self, name: &str) -> std::vec::IntoIter<&Element> {
        self.children
            .iter()
            .filter(|c| c.name == name)
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The one child `name` (`None` if absent); two are an error naming `path/name`.
    fn one(&self, path: &str, name: &str) -> Result<Option<&Element>, Rejection> {
        let mut it = self.all(name);
        let first = it.next();
        if it.next().is_some() {
            return Err(Rejection::format(
                join(path, name),
                "appears more than once; it must appear once",
            ));
        }
        Ok(first)
    }

    fn required(&self, path: &str, name: &str) -> Result<&Element, Rejection> {
        self.one(path, name)?
            .ok_or_else(|| Rejection::format(join(path, name), missing(path)))
    }

    /// The trimmed text of an optional child; empty text counts as absent.
    fn text_of(&self, path: &str, name: &str) -> Result<Option<String>, Rejection> {
        Ok(self
            .one(path, name)?
            .map(|e| e.text.trim().to_string())
            .filter(|t| !t.is_empty()))
    }

    fn required_text(&self, path: &str, name: &str) -> Result<String, Rejection> {
        self.text_of(path, name)?
            .ok_or_else(|| Rejection::format(join(path, name), missing(path)))
    }
}

fn missing(path: &str) -> String {
    if path.is_empty() {
        "is missing".into()
    } else {
        format!("is missing or empty (inside {path})")
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}/{name}")
    }
}

fn local_name(raw: &str) -> String {
    match raw.rsplit_once(':') {
        Some((_, local)) => local.to_string(),
        None => raw.to_string(),
    }
}

/// The rejection of an element nested deeper than [`MAX_DEPTH`]: its path (the first levels and the
/// element itself, so a path of 60,000 names does not become a 60,000-name reason).
fn too_deep(stack: &[Element], name: &str) -> Rejection {
    let path: Vec<&str> = stack
        .iter()
        .take(MAX_DEPTH)
        .map(|e| e.name.as_str())
        .chain(std::iter::once(name))
        .collect();
    Rejection::format(
        path.join("/"),
        format!(
            "is nested {} levels deep; a request is at most {MAX_DEPTH} levels deep",
            stack.len() + 1
        ),
    )
}

/// Parses a whole document into its root element. A document that ends early is `Incomplete`;
/// one nested deeper than [`MAX_DEPTH`] is rejected at the first element too deep.
pub fn parse_document(text: &str) -> Result<Element, ReadError> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let bad = |pos: u64, what: String| -> ReadError {
        Rejection::format("", format!("not well-formed XML at byte {pos}: {what}")).into()
    };
    loop {
        let pos = reader.buffer_position();
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(quick_xml::Error::Syntax(s))
                if s != quick_xml::errors::SyntaxError::InvalidBangMarkup =>
            {
                return Err(ReadError::Incomplete(format!("the file ends early: {s}")));
            }
            Err(quick_xml::Error::IllFormed(quick_xml::errors::IllFormedError::MissingEndTag(
                t,
            ))) => {
                return Err(ReadError::Incomplete(format!(
                    "the file ends before </{t}>"
                )));
            }
            Err(e) => return Err(bad(reader.error_position(), e.to_string())),
        };
        match event {
            Event::Start(s) => {
                if root.is_some() {
                    return Err(bad(pos, "a second root element".into()));
                }
                let name = local_name(s.name().as_ref());
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(&stack, &name).into());
                }
                stack.push(Element {
                    name,
                    ..Element::default()
                });
            }
            Event::Empty(s) => {
                let name = local_name(s.name().as_ref());
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(&stack, &name).into());
                }
                let e = Element {
                    name,
                    ..Element::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None if root.is_none() => root = Some(e),
                    None => return Err(bad(pos, "a second root element".into())),
                }
            }
            Event::End(_) => {
                let Some(done) = stack.pop() else {
                    return Err(bad(pos, "an end tag without a start tag".into()));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(e) => e.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => {
                        return Err(bad(
                            pos,
                            if root.is_some() {
                                "text after the root element".into()
                            } else {
                                "text before the root element (is this an XML file?)".into()
                            },
                        ));
                    }
                }
            }
            Event::CData(t) => match stack.last_mut() {
                Some(e) => e.text.push_str(&t.xml10_content()),
                None => return Err(bad(pos, "CDATA outside the root element".into())),
            },
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match quick_xml::escape::resolve_xml_entity(&r.xml10_content()) {
                        Some(s) => s.to_string(),
                        None => {
                            return Err(bad(
                                pos,
                                format!("unknown entity &{};", r.xml10_content()),
                            ));
                        }
                    },
                    Err(e) => return Err(bad(pos, e.to_string())),
                };
                match stack.last_mut() {
                    Some(e) => e.text.push_str(&resolved),
                    None => return Err(bad(pos, "an entity outside the root element".into())),
                }
            }
            Event::Eof => {
                return match (root, stack.is_empty()) {
                    (Some(r), true) => Ok(r),
                    (_, false) => Err(ReadError::Incomplete(format!(
                        "the file ends before </{}>",
                        stack.last().map(|e| e.name.as_str()).unwrap_or_default()
                    ))),
                    (None, true) => Err(ReadError::Incomplete(
                        "the file has no root element (yet)".into(),
                    )),
                };
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

const HEADER: &str = "MessageHeader";
const BODY: &str = "MessageBody";
const SEARCH: &str = "QualificationConfirmSearchInfo";

fn echo_of(root: &Element) -> Echo {
    let text = |name: &str| {
        root.all(HEADER)
            .next()
            .and_then(|h| h.all(name).next())
            .map(|e| e.text.trim().to_string())
            .unwrap_or_default()
    };
    Echo {
        confirmation_date: text("QualificationConfirmationDate"),
        facility: text("MedicalInstitutionCode"),
        arbitrary_id: text("ArbitraryFileIdentifier"),
    }
}

fn read_header(root: &Element, facility: &str) -> Result<Header, Rejection> {
    let h = root.required("", HEADER)?;
    let path = HEADER;
    let date_path = join(path, "QualificationConfirmationDate");
    let date_text = h.required_text(path, "QualificationConfirmationDate")?;
    let service_date =
        parse_date(&date_text).map_err(|e| Rejection::format(&date_path, e.message))?;
    let code = h.required_text(path, "MedicalInstitutionCode")?;
    if code != facility {
        return Err(Rejection::new(
            RejectKind::Facility,
            join(path, "MedicalInstitutionCode"),
            format!("{code} is not this edge's facility code {facility}"),
        ));
    }
    Ok(Header {
        echo: echo_of(root),
        service_date,
    })
}

fn field<T>(
    e: &Element,
    path: &str,
    name: &str,
    parse: impl Fn(&str) -> Result<T, onshi_model::error::ValueError>,
) -> Result<Option<T>, Rejection> {
    match e.text_of(path, name)? {
        None => Ok(None),
        Some(t) => parse(&t)
            .map(Some)
            .map_err(|err| Rejection::format(join(path, name), err.message)),
    }
}

fn read_search(e: &Element, path: &str, service_date: NaiveDate) -> Result<SearchInfo, Rejection> {
    let required = |name: &str| Rejection::format(join(path, name), missing(path));
    let insurer_number = field(e, path, "InsurerNumber", InsurerNumber::parse)?
        .ok_or_else(|| required("InsurerNumber"))?;
    let symbol = field(e, path, "InsuredCardSymbol", CardSymbol::parse)?;
    let number = field(e, path, "InsuredIdentificationNumber", CardNumber::parse)?
        .ok_or_else(|| required("InsuredIdentificationNumber"))?;
    let branch = field(e, path, "InsuredBranchNumber", Branch::parse)?;
    let birth_date =
        field(e, path, "Birthdate", parse_date)?.ok_or_else(|| required("Birthdate"))?;
    onshi_model::plausible::check_birth_date("Birthdate", birth_date, service_date)
        .map_err(|e| Rejection::format(join(path, "Birthdate"), e.message))?;
    let limit_consent = match e
        .text_of(path, "LimitApplicationCertificateRelatedConsFlg")?
        .as_deref()
    {
        None | Some("0") => false,
        Some("1") => true,
        Some(other) => {
            return Err(Rejection::format(
                join(path, "LimitApplicationCertificateRelatedConsFlg"),
                format!("{other:?} is not 0 or 1"),
            ));
        }
    };
    Ok(SearchInfo {
        request: CheckRequest {
            subject: CheckSubject::InsuranceCard {
                card: InsuranceCardKey {
                    insurer_number,
                    symbol,
                    number,
                    branch,
                },
                birth_date,
            },
            service_date,
        },
        limit_consent,
    })
}

/// [`read_request`] with any panic caught and turned into a rejection: one file must never stop
/// the edge, even through a bug in this module.
pub fn read_request_guarded(
    kind: RequestKind,
    bytes: &[u8],
    facility: &str,
) -> Result<(Decoded, OqsRequest), ReadError> {
    guarded(|| read_request(kind, bytes, facility))
}

/// Runs `f`, turning a panic into a rejection naming it (the panic's message is ours, never the
/// file's values).
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T, ReadError>) -> Result<T, ReadError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => Err(Rejection::format(
            "",
            format!(
                "the edge failed while reading this file ({}); it is quarantined",
                panic_message(panic.as_ref())
            ),
        )
        .into()),
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".into()
    }
}

/// Reads a request of `kind` for `facility` (the edge's 10-digit code).
pub fn read_request(
    kind: RequestKind,
    bytes: &[u8],
    facility: &str,
) -> Result<(Decoded, OqsRequest), ReadError> {
    let decoded = decode(bytes)?;
    let root = parse_document(&decoded.text)?;
    let with_echo = |mut r: Rejection| {
        r.echo = Box::new(echo_of(&root));
        ReadError::Rejected(r)
    };
    if root.name != "XmlMsg" {
        return Err(with_echo(Rejection::format(
            root.name.clone(),
            "is the root element; an OQS request's root is XmlMsg",
        )));
    }
    let request = (|| {
        let header = read_header(&root, facility)?;
        let body = root.required("", BODY)?;
        Ok(match kind {
            RequestKind::Single => {
                let path = format!("{BODY}/{SEARCH}");
                let search = body.required(BODY, SEARCH)?;
                OqsRequest::Single {
                    search: read_search(search, &path, header.service_date)?,
                    header,
                }
            }
            RequestKind::BatchUpload => {
                let entries: Vec<&Element> = body.all(SEARCH).collect();
                if entries.is_empty() {
                    return Err(Rejection::format(
                        join(BODY, SEARCH),
                        "is missing: a batch upload carries one or more",
                    ));
                }
                if entries.len() > MAX_BATCH_ENTRIES {
                    return Err(Rejection::format(
                        join(BODY, SEARCH),
                        format!(
                            "appears {} times; at most {MAX_BATCH_ENTRIES} per batch",
                            entries.len()
                        ),
                    ));
                }
                let searches = entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        read_search(e, &format!("{BODY}/{SEARCH}[{}]", i + 1), header.service_date)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                OqsRequest::BatchUpload { header, searches }
            }
            RequestKind::BatchDownload => {
                let header_el = root.required("", HEADER)?;
                let number = match body.text_of(BODY, "ReceptionNumber")? {
                    Some(n) => n,
                    None => header_el.required_text(HEADER, "ReceptionNumber").map_err(|_| {
                        Rejection::format(
                            join(BODY, "ReceptionNumber"),
                            "is missing or empty: give the number the batch upload's result carried",
                        )
                    })?,
                };
                OqsRequest::BatchDownload {
                    header,
                    reception_number: number,
                }
            }
        })
    })()
    .map_err(with_echo)?;
    Ok((decoded, request))
}

// ---------------------------------------------------------------------------------------------
// Results

/// A small indenting writer: every value is escaped.
struct Out {
    s: String,
    depth: usize,
}

impl Out {
    fn new(encoding: TextEncoding) -> Out {
        Out {
            s: format!(
                "<?xml version=\"1.0\" encoding=\"{}\" standalone=\"no\"?>\n",
                encoding.label()
            ),
            depth: 0,
        }
    }
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.s.push_str("  ");
        }
    }
    fn open(&mut self, name: &str) {
        self.indent();
        let _ = writeln!(self.s, "<{name}>");
        self.depth += 1;
    }
    fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        let _ = writeln!(self.s, "</{name}>");
    }
    fn leaf(&mut self, name: &str, value: &str) {
        self.indent();
        let _ = writeln!(
            self.s,
            "<{name}>{}</{name}>",
            quick_xml::escape::escape(value)
        );
    }
    fn opt(&mut self, name: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.leaf(name, v);
        }
    }
}

fn ymd(d: NaiveDate) -> String {
    d.format("%Y%m%d").to_string()
}

/// What every result's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultMeta<'a> {
    pub echo: &'a Echo,
    /// `ProcessExecutionTime`, local time.
    pub processed_at: NaiveDateTime,
    /// [`codes::REFERENCE_CARD`] or [`codes::REFERENCE_INSURANCE_CARD`].
    pub reference: &'static str,
    pub encoding: TextEncoding,
}

fn header(out: &mut Out, meta: &ResultMeta<'_>, segment: Segment, error: Option<(&str, &str)>) {
    out.open("MessageHeader");
    out.leaf(
        "ProcessExecutionTime",
        &meta.processed_at.format("%Y%m%d%H%M%S").to_string(),
    );
    out.leaf(
        "QualificationConfirmationDate",
        &meta.echo.confirmation_date,
    );
    out.leaf("MedicalInstitutionCode", &meta.echo.facility);
    out.leaf("ArbitraryFileIdentifier", &meta.echo.arbitrary_id);
    out.leaf("ReferenceClassification", meta.reference);
    out.leaf("SegmentOfResult", segment.code());
    out.leaf("ErrorCode", error.map_or("", |e| e.0));
    out.leaf("ErrorMessage", error.map_or("", |e| e.1));
    out.leaf(
        "CharacterCodeIdentifier",
        meta.encoding.character_code_identifier(),
    );
    out.close("MessageHeader");
}

/// The fields of one qualification (`ResultOfQualificationConfirmation`'s content).
fn qualification_fields(out: &mut Out, q: &Qualification, service_date: NaiveDate) {
    out.leaf("InsuredCardClassification", q.card_class.as_str());
    out.leaf("InsurerNumber", &q.insurer_number.to_file_field());
    out.opt("InsuredCardSymbol", q.symbol.as_ref().map(|s| s.as_str()));
    out.leaf("InsuredIdentificationNumber", q.number.as_str());
    out.opt("InsuredBranchNumber", q.branch.as_ref().map(|b| b.as_str()));
    out.leaf(
        "PersonalFamilyClassification",
        &q.relationship.code().to_string(),
    );
    out.leaf("Name", &q.name);
    out.leaf("NameKana", &to_halfwidth_kana(&q.name_kana));
    out.leaf("Sex1", &q.sex.code().to_string());
    out.leaf("Birthdate", &ymd(q.birth_date));
    out.leaf("Address", &q.address);
    out.opt("PostNumber", q.postal_code.as_ref().map(|p| p.as_str()));
    out.leaf("QualificationDate", &ymd(q.acquired_on));
    out.opt("DisqualificationDate", q.lost_on.map(ymd).as_deref());
    out.leaf(
        "InsuredPartialContributionRatio",
        &format!("{:03}", q.share_percent),
    );
    if onshi_fallback::share::preschool_last_day(q.birth_date) >= service_date {
        out.leaf("PreschoolClassification", "1");
    }
    out.leaf("InsurerName", &q.insurer_name);
}

/// The answer to a check, as a result shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckView<'a> {
    pub segment: Segment,
    /// `ProcessingResultStatus`.
    pub status: &'static str,
    /// `ProcessingResultCode` and `ProcessingResultMessage`.
    pub note: Option<(&'a str, String)>,
    pub validity: Validity,
    pub qualifications: &'a [Qualification],
    pub service_date: NaiveDate,
}

/// A check's result (`OQSsiquc01res`, and face files).
pub fn render_check(meta: &ResultMeta<'_>, v: &CheckView<'_>) -> String {
    let mut out = Out::new(meta.encoding);
    out.open("XmlMsg");
    header(&mut out, meta, v.segment, None);
    out.open("MessageBody");
    out.leaf("ProcessingResultStatus", v.status);
    out.leaf("ProcessingResultCode", v.note.as_ref().map_or("", |n| n.0));
    out.leaf(
        "ProcessingResultMessage",
        v.note.as_ref().map_or("", |n| n.1.as_str()),
    );
    out.leaf(
        "QualificationValidity",
        &v.validity.code().map(|c| c.to_string()).unwrap_or_default(),
    );
    if !v.qualifications.is_empty() {
        out.open("ResultList");
        for q in v.qualifications {
            out.open("ResultOfQualificationConfirmation");
            qualification_fields(&mut out, q, v.service_date);
            out.close("ResultOfQualificationConfirmation");
        }
        out.close("ResultList");
    }
    out.close("MessageBody");
    out.close("XmlMsg");
    out.s
}

/// A request that could not be answered (`SegmentOfResult` 9 with the code and the reason).
pub fn render_error(meta: &ResultMeta<'_>, coded: Coded, reason: &str) -> String {
    let mut out = Out::new(meta.encoding);
    out.open("XmlMsg");
    let message = format!("{} {reason}", coded.message);
    header(
        &mut out,
        meta,
        Segment::Failed,
        Some((coded.code, &message)),
    );
    out.open("MessageBody");
    out.leaf("ProcessingResultStatus", codes::STATUS_ERROR);
    out.leaf("ProcessingResultCode", coded.code);
    out.leaf("ProcessingResultMessage", &message);
    out.close("MessageBody");
    out.close("XmlMsg");
    out.s
}

/// A batch upload's result: accepted, with the number to download its results by.
pub fn render_batch_accepted(
    meta: &ResultMeta<'_>,
    reception_number: &str,
    count: usize,
) -> String {
    let mut out = Out::new(meta.encoding);
    out.open("XmlMsg");
    header(&mut out, meta, Segment::Done, None);
    out.open("MessageBody");
    out.leaf("ProcessingResultStatus", codes::STATUS_OK);
    out.leaf("ProcessingResultCode", "");
    out.leaf(
        "ProcessingResultMessage",
        &format!("一括照会 {count} 件を受け付けました。受付番号で結果を取得してください。"),
    );
    out.leaf("ReceptionNumber", reception_number);
    out.close("MessageBody");
    out.close("XmlMsg");
    out.s
}

/// A batch download while the batch is still being answered (`SegmentOfResult` 2).
pub fn render_batch_processing(
    meta: &ResultMeta<'_>,
    reception_number: &str,
    note: &str,
) -> String {
    let mut out = Out::new(meta.encoding);
    out.open("XmlMsg");
    header(&mut out, meta, Segment::Processing, None);
    out.open("MessageBody");
    out.leaf("ProcessingResultStatus", codes::STATUS_OK);
    out.leaf("ProcessingResultCode", codes::BATCH_PROCESSING.code);
    let message = if note.is_empty() {
        codes::BATCH_PROCESSING.message.to_string()
    } else {
        format!("{} {note}", codes::BATCH_PROCESSING.message)
    };
    out.leaf("ProcessingResultMessage", &message);
    out.leaf("ReceptionNumber", reception_number);
    out.close("MessageBody");
    out.close("XmlMsg");
    out.s
}

/// The qualification a batch entry shows: the one valid on the service date, else the first.
fn shown(outcome: &CheckOutcome, on: NaiveDate) -> Option<&Qualification> {
    outcome
        .qualifications
        .iter()
        .find(|q| q.is_valid_on(on))
        .or_else(|| outcome.qualifications.first())
}

/// A finished batch's results: one `ResultOfQualificationConfirmation` per uploaded entry, in
/// upload order, each with its `SerialNumber` (1-based), its own status and validity, and the
/// qualification found (or, when none was, the searched numbers echoed).
pub fn render_batch_results(
    meta: &ResultMeta<'_>,
    reception_number: &str,
    entries: &[(CheckRequest, CheckOutcome)],
) -> String {
    let mut out = Out::new(meta.encoding);
    out.open("XmlMsg");
    header(&mut out, meta, Segment::Done, None);
    out.open("MessageBody");
    out.leaf("ProcessingResultStatus", codes::STATUS_OK);
    out.leaf("ProcessingResultCode", "");
    out.leaf("ProcessingResultMessage", "");
    out.leaf("ReceptionNumber", reception_number);
    out.open("ResultList");
    for (i, (req, outcome)) in entries.iter().enumerate() {
        out.open("ResultOfQualificationConfirmation");
        out.leaf("SerialNumber", &(i + 1).to_string());
        out.leaf("ProcessingResultStatus", codes::STATUS_OK);
        out.leaf(
            "QualificationValidity",
            &outcome
                .validity
                .code()
                .map(|c| c.to_string())
                .unwrap_or_default(),
        );
        match shown(outcome, req.service_date) {
            Some(q) => qualification_fields(&mut out, q, req.service_date),
            None => {
                if let CheckSubject::InsuranceCard { card, birth_date } = &req.subject {
                    out.leaf("InsurerNumber", &card.insurer_number.to_file_field());
                    out.opt(
                        "InsuredCardSymbol",
                        card.symbol.as_ref().map(|s| s.as_str()),
                    );
                    out.leaf("InsuredIdentificationNumber", card.number.as_str());
                    out.opt(
                        "InsuredBranchNumber",
                        card.branch.as_ref().map(|b| b.as_str()),
                    );
                    out.leaf("Birthdate", &ymd(*birth_date));
                }
            }
        }
        out.close("ResultOfQualificationConfirmation");
    }
    out.close("ResultList");
    out.close("MessageBody");
    out.close("XmlMsg");
    out.s
}

// ---------------------------------------------------------------------------------------------
// Requests as the journal keeps them

/// What a request asked, as the journal keeps it: the parsed searches or the reception number,
/// never the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    Searches(Vec<SearchInfo>),
    Download(String),
}

/// A request rendered back from what the journal keeps (the header's echo and the parsed body):
/// an OQS request document that reads as the same request. Formatting, comments and unknown
/// elements of the original file are not kept.
pub fn render_request(echo: &Echo, encoding: TextEncoding, body: &RequestBody) -> String {
    let mut out = Out::new(encoding);
    out.open("XmlMsg");
    out.open(HEADER);
    out.leaf("QualificationConfirmationDate", &echo.confirmation_date);
    out.leaf("MedicalInstitutionCode", &echo.facility);
    out.leaf("ArbitraryFileIdentifier", &echo.arbitrary_id);
    out.close(HEADER);
    out.open(BODY);
    match body {
        RequestBody::Searches(searches) => {
            for s in searches {
                let onshi_model::CheckSubject::InsuranceCard { card, birth_date } =
                    &s.request.subject
                else {
                    continue;
                };
                out.open(SEARCH);
                out.leaf("InsurerNumber", &card.insurer_number.to_file_field());
                out.opt(
                    "InsuredCardSymbol",
                    card.symbol.as_ref().map(|v| v.as_str()),
                );
                out.leaf("InsuredIdentificationNumber", card.number.as_str());
                out.opt(
                    "InsuredBranchNumber",
                    card.branch.as_ref().map(|v| v.as_str()),
                );
                out.leaf("Birthdate", &ymd(*birth_date));
                out.leaf(
                    "LimitApplicationCertificateRelatedConsFlg",
                    if s.limit_consent { "1" } else { "0" },
                );
                out.close(SEARCH);
            }
        }
        RequestBody::Download(number) => out.leaf("ReceptionNumber", number),
    }
    out.close(BODY);
    out.close("XmlMsg");
    out.s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/oqs");
    const FACILITY: &str = "1310000017";

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    fn single(body: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<XmlMsg><MessageHeader><QualificationConfirmationDate>20261120</QualificationConfirmationDate><MedicalInstitutionCode>{FACILITY}</MedicalInstitutionCode><ArbitraryFileIdentifier>X-1</ArbitraryFileIdentifier></MessageHeader><MessageBody>{body}</MessageBody></XmlMsg>\n"
        )
    }

    fn search(insurer: &str) -> String {
        format!(
            "<QualificationConfirmSearchInfo><InsurerNumber>{insurer}</InsurerNumber><InsuredCardSymbol>12</InsuredCardSymbol><InsuredIdentificationNumber>3456789</InsuredIdentificationNumber><InsuredBranchNumber>01</InsuredBranchNumber><Birthdate>19700302</Birthdate><LimitApplicationCertificateRelatedConsFlg>0</LimitApplicationCertificateRelatedConsFlg></QualificationConfirmSearchInfo>"
        )
    }

    fn rejected(r: Result<(Decoded, OqsRequest), ReadError>) -> Rejection {
        match r {
            Err(ReadError::Rejected(r)) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn implausible_dates_are_refused_like_the_api_s_naming_the_element() {
        // A birth year 0001 (a mistyped year would get the 75+ share) is refused as it is read.
        let r = rejected(read_request(
            RequestKind::Single,
            single(&search("  138057").replace("19700302", "00010302")).as_bytes(),
            FACILITY,
        ));
        assert_eq!(
            r.field, "MessageBody/QualificationConfirmSearchInfo/Birthdate",
            "{r:?}"
        );
        assert!(r.message.contains("1868"), "{}", r.message);
        // A confirmation date outside the service-date window around today is refused with the
        // header's echo kept for the error result; inside it, the request stands.
        let (_, far) = read_request(
            RequestKind::Single,
            single(&search("  138057"))
                .replace("20261120", "99991231")
                .as_bytes(),
            FACILITY,
        )
        .unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let r = far.check_plausible(today).unwrap_err();
        assert_eq!(r.field, "MessageHeader/QualificationConfirmationDate");
        assert_eq!(r.echo.arbitrary_id, "X-1");
        let (_, ok) = read_request(
            RequestKind::Single,
            single(&search("  138057")).as_bytes(),
            FACILITY,
        )
        .unwrap();
        assert_eq!(ok.check_plausible(today), Ok(()));
    }

    #[test]
    fn names_and_result_names() {
        assert_eq!(
            RequestKind::of_file_name("OQSsiquc01req_20261120091500.xml"),
            Some(RequestKind::Single)
        );
        assert_eq!(
            RequestKind::of_file_name("oqsmuquc01req_a.XML"),
            Some(RequestKind::BatchUpload)
        );
        assert_eq!(
            RequestKind::of_file_name("OQSmuquc02req_a.xml"),
            Some(RequestKind::BatchDownload)
        );
        assert_eq!(RequestKind::of_file_name("OQSsiquc01req.xml"), None);
        assert_eq!(RequestKind::of_file_name("OQSsiquc01req_1.xml.tmp"), None);
        assert_eq!(RequestKind::of_file_name("hello.xml"), None);
        assert_eq!(
            result_file_name("OQSsiquc01req_example0001.xml").as_deref(),
            Some("OQSsiquc01res_example0001.xml")
        );
        assert_eq!(
            result_file_name("OQSSIQUC01REQ_req.xml").as_deref(),
            Some("OQSSIQUC01RES_req.xml")
        );
    }

    #[test]
    fn the_fixture_request_reads_with_its_padded_municipal_insurer_number() {
        let (d, r) = read_request(
            RequestKind::Single,
            &fixture("OQSsiquc01req_example0001.xml"),
            FACILITY,
        )
        .unwrap();
        assert_eq!(d.encoding, TextEncoding::Utf8);
        let OqsRequest::Single { header, search } = r else {
            panic!("{r:?}")
        };
        assert_eq!(header.echo.arbitrary_id, "RECEPT-000123");
        assert_eq!(
            header.service_date,
            NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
        );
        assert!(!search.limit_consent);
        let CheckSubject::InsuranceCard { card, birth_date } = &search.request.subject else {
            panic!()
        };
        assert_eq!(card.insurer_number.as_str(), "138057");
        assert!(card.insurer_number.is_municipal_nhi());
        assert_eq!(card.insurer_number.to_file_field(), "  138057");
        assert_eq!(card.symbol.as_ref().unwrap().as_str(), "12");
        assert_eq!(card.branch.as_ref().unwrap().as_str(), "01");
        assert_eq!(*birth_date, NaiveDate::from_ymd_opt(1970, 3, 2).unwrap());
    }

    fn fixture_person() -> Qualification {
        Qualification::from_registry_json(r#"{"person_id":"P0000001","card_id":null,"insurer_number":"138057","insurer_name":"千代田区国民健康保険","card_class":"01","symbol":"12","number":"3456789","branch":"01","relationship":"insured","name":"山田　太郎","name_kana":"ヤマダ　タロウ","sex":"male","birth_date":"1970-03-02","address":"東京都千代田区霞が関1-2-2","postal_code":"100-8916","acquired_on":"2018-04-01","lost_on":null,"loss_reason":null,"share_percent":30}"#).unwrap()
    }

    #[test]
    fn the_fixture_result_is_rendered_field_for_field() {
        let echo = Echo {
            confirmation_date: "20261120".into(),
            facility: FACILITY.into(),
            arbitrary_id: "RECEPT-000123".into(),
        };
        let meta = ResultMeta {
            echo: &echo,
            processed_at: NaiveDate::from_ymd_opt(2026, 11, 20)
                .unwrap()
                .and_hms_opt(9, 15, 2)
                .unwrap(),
            reference: codes::REFERENCE_INSURANCE_CARD,
            encoding: TextEncoding::Utf8,
        };
        let q = [fixture_person()];
        let text = render_check(
            &meta,
            &CheckView {
                segment: Segment::Done,
                status: codes::STATUS_OK,
                note: None,
                validity: Validity::Valid,
                qualifications: &q,
                service_date: NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
            },
        );
        let want = String::from_utf8(fixture("OQSsiquc01res_example0001.xml")).unwrap();
        let norm = |s: &str| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(norm(&text), norm(&want));
    }

    #[test]
    fn shift_jis_requests_read_and_results_round_trip() {
        let text = single(&search("  138057")).replace("UTF-8", "Shift_JIS");
        let bytes = encode(&text, TextEncoding::ShiftJis);
        let (d, _) = read_request(RequestKind::Single, &bytes, FACILITY).unwrap();
        assert_eq!(d.encoding, TextEncoding::ShiftJis);
        // Kanji and half-width kana in Shift_JIS; 髙 (not in JIS X 0208) as a character reference.
        let out = encode("<a>山田ﾔﾏﾀﾞ髙</a>", TextEncoding::ShiftJis);
        assert!(out.contains(&0xD4), "half-width ﾔ is one byte 0xD4");
        let back = decode(
            &[
                b"<?xml version=\"1.0\" encoding=\"Shift_JIS\"?>".as_slice(),
                &out,
            ]
            .concat(),
        )
        .unwrap();
        let root = parse_document(&back.text).unwrap();
        assert_eq!(root.text, "山田ﾔﾏﾀﾞ髙");
    }

    #[test]
    fn each_bad_file_is_rejected_naming_the_element() {
        let cases: Vec<(Vec<u8>, RejectKind, &str)> = vec![
            (b"hello, not xml".to_vec(), RejectKind::Format, ""),
            (
                b"<?xml version=\"1.0\" encoding=\"EUC-JP\"?><XmlMsg/>".to_vec(),
                RejectKind::Encoding,
                "encoding",
            ),
            (
                b"<?xml version=\"1.0\"?><XmlMsg>\xff\xfe</XmlMsg>".to_vec(),
                RejectKind::Encoding,
                "encoding",
            ),
            (b"<Other></Other>".to_vec(), RejectKind::Format, "Other"),
            (
                single("").into_bytes(),
                RejectKind::Format,
                "MessageBody/QualificationConfirmSearchInfo",
            ),
            (
                single(&search("  138058")).into_bytes(),
                RejectKind::Format,
                "MessageBody/QualificationConfirmSearchInfo/InsurerNumber",
            ),
            (
                single(&search("13805")).into_bytes(),
                RejectKind::Format,
                "MessageBody/QualificationConfirmSearchInfo/InsurerNumber",
            ),
            (
                single(&search("  138057").replace("3456789", "34●6789")).into_bytes(),
                RejectKind::Format,
                "MessageBody/QualificationConfirmSearchInfo/InsuredIdentificationNumber",
            ),
            (
                single(&search("  138057").replace("19700302", "19701302")).into_bytes(),
                RejectKind::Format,
                "MessageBody/QualificationConfirmSearchInfo/Birthdate",
            ),
            (
                single(&search("  138057"))
                    .replace(FACILITY, "1311234567")
                    .into_bytes(),
                RejectKind::Facility,
                "MessageHeader/MedicalInstitutionCode",
            ),
            (
                single(&format!("{}{}", search("  138057"), search("  138057"))).into_bytes(),
                RejectKind::Format,
                "MessageBody/QualificationConfirmSearchInfo",
            ),
            (
                single(&search("  138057"))
                    .replace("<MessageBody>", "<MessageBody>&nope;")
                    .into_bytes(),
                RejectKind::Format,
                "",
            ),
            (
                single(&search("  138057"))
                    .replace("</XmlMsg>", "</XmlMsg><XmlMsg/>")
                    .into_bytes(),
                RejectKind::Format,
                "",
            ),
        ];
        for (bytes, kind, field) in cases {
            let r = rejected(read_request(RequestKind::Single, &bytes, FACILITY));
            assert_eq!(
                (r.kind, r.field.as_str()),
                (kind, field),
                "{}: {r:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(!r.message.is_empty());
        }
        // The echo survives a field error, for the error result.
        let r = rejected(read_request(
            RequestKind::Single,
            single(&search("  138058")).as_bytes(),
            FACILITY,
        ));
        assert_eq!(r.echo.arbitrary_id, "X-1");
    }

    #[test]
    fn every_prefix_of_a_good_file_is_incomplete_never_rejected() {
        let text = single(&search("  138057"))
            .replace("12</InsuredCardSymbol>", "１２山</InsuredCardSymbol>");
        for enc in [TextEncoding::Utf8, TextEncoding::ShiftJis] {
            let text = text.replace("UTF-8", enc.label());
            let bytes = encode(&text, enc);
            let end = bytes.len() - 1; // the final newline is not needed
            for n in 0..end {
                match read_request(RequestKind::Single, &bytes[..n], FACILITY) {
                    Err(ReadError::Incomplete(_)) => {}
                    other => panic!("{enc:?} prefix of {n} bytes: {other:?}"),
                }
            }
            assert!(read_request(RequestKind::Single, &bytes[..end], FACILITY).is_ok());
        }
    }

    #[test]
    fn batches_read_and_render() {
        let upload = single(&format!(
            "{}{}",
            search("  138057"),
            search("  138057").replace("01</InsuredBranchNumber>", "02</InsuredBranchNumber>")
        ));
        let (_, r) = read_request(RequestKind::BatchUpload, upload.as_bytes(), FACILITY).unwrap();
        let OqsRequest::BatchUpload { searches, .. } = r else {
            panic!()
        };
        assert_eq!(searches.len(), 2);
        let bad = single(&format!("{}{}", search("  138057"), search("  138058")));
        let r = rejected(read_request(
            RequestKind::BatchUpload,
            bad.as_bytes(),
            FACILITY,
        ));
        assert_eq!(
            r.field,
            "MessageBody/QualificationConfirmSearchInfo[2]/InsurerNumber"
        );

        let download = single("<ReceptionNumber>R-1</ReceptionNumber>");
        let (_, r) =
            read_request(RequestKind::BatchDownload, download.as_bytes(), FACILITY).unwrap();
        assert!(
            matches!(r, OqsRequest::BatchDownload { ref reception_number, .. } if reception_number == "R-1")
        );
        let r = rejected(read_request(
            RequestKind::BatchDownload,
            single("").as_bytes(),
            FACILITY,
        ));
        assert_eq!(r.field, "MessageBody/ReceptionNumber");

        let echo = Echo::default();
        let meta = ResultMeta {
            echo: &echo,
            processed_at: NaiveDate::from_ymd_opt(2026, 11, 20)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap(),
            reference: codes::REFERENCE_INSURANCE_CARD,
            encoding: TextEncoding::Utf8,
        };
        let req = searches[0].request.clone();
        let found = CheckOutcome {
            validity: Validity::Valid,
            qualifications: vec![fixture_person()],
        };
        let none = CheckOutcome {
            validity: Validity::NotFound,
            qualifications: vec![],
        };
        let text = render_batch_results(&meta, "R-1", &[(req.clone(), found), (req, none)]);
        let root = parse_document(&text).unwrap();
        let list = root
            .all("MessageBody")
            .next()
            .unwrap()
            .all("ResultList")
            .next()
            .unwrap();
        let entries: Vec<&Element> = list.all("ResultOfQualificationConfirmation").collect();
        assert_eq!(entries.len(), 2);
        let t = |e: &Element, n: &str| e.all(n).next().map(|x| x.text.clone()).unwrap_or_default();
        assert_eq!(
            (
                t(entries[0], "SerialNumber"),
                t(entries[0], "QualificationValidity"),
                t(entries[0], "NameKana")
            ),
            ("1".into(), "1".into(), "ﾔﾏﾀﾞ ﾀﾛｳ".into())
        );
        assert_eq!(
            (
                t(entries[1], "SerialNumber"),
                t(entries[1], "QualificationValidity"),
                t(entries[1], "InsurerNumber")
            ),
            ("2".into(), "4".into(), "  138057".into())
        );
        let processing = render_batch_processing(&meta, "R-1", "");
        assert!(processing.contains("<SegmentOfResult>2</SegmentOfResult>"));
    }

    #[test]
    fn escaping_in_results() {
        let echo = Echo {
            arbitrary_id: "a<b&c".into(),
            ..Echo::default()
        };
        let meta = ResultMeta {
            echo: &echo,
            processed_at: NaiveDate::from_ymd_opt(2026, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap(),
            reference: codes::REFERENCE_INSURANCE_CARD,
            encoding: TextEncoding::Utf8,
        };
        let text = render_error(&meta, codes::BAD_REQUEST, "x < y");
        let root = parse_document(&text).unwrap();
        assert_eq!(
            root.all("MessageHeader")
                .next()
                .unwrap()
                .all("ArbitraryFileIdentifier")
                .next()
                .unwrap()
                .text,
            "a<b&c"
        );
        assert!(text.contains("<SegmentOfResult>9</SegmentOfResult>"));
    }

    #[test]
    fn deep_nesting_is_rejected_with_the_element_path_not_a_crash() {
        // About 60,000 levels in about 420 KB: once a stack overflow at every start.
        let depth = 60_000;
        let doc = format!(
            "<?xml version=\"1.0\"?><XmlMsg>{}{}</XmlMsg>",
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        );
        assert!(doc.len() > 400_000);
        let r = rejected(read_request(RequestKind::Single, doc.as_bytes(), FACILITY));
        assert_eq!(r.kind, RejectKind::Format);
        assert!(r.field.starts_with("XmlMsg/a/a/"), "{}", r.field);
        assert_eq!(r.field.split('/').count(), MAX_DEPTH + 1, "{}", r.field);
        assert!(r.message.contains("levels deep"), "{}", r.message);
        // Self-closing at the limit too; a real request is well within it.
        let empty = format!(
            "<XmlMsg>{}<b/>{}</XmlMsg>",
            "<a>".repeat(MAX_DEPTH - 1),
            "</a>".repeat(MAX_DEPTH - 1)
        );
        assert!(
            rejected(read_request(
                RequestKind::Single,
                empty.as_bytes(),
                FACILITY
            ))
            .field
            .ends_with("/b")
        );
        assert!(
            read_request(
                RequestKind::Single,
                single(&search("  138057")).as_bytes(),
                FACILITY
            )
            .is_ok()
        );
    }

    #[test]
    fn a_panic_while_reading_becomes_a_rejection() {
        let r: Result<(), ReadError> = guarded(|| panic!("boom"));
        match r {
            Err(ReadError::Rejected(r)) => assert!(r.message.contains("boom"), "{}", r.message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_kept_request_renders_back_to_the_same_request() {
        for enc in [TextEncoding::Utf8, TextEncoding::ShiftJis] {
            let text = single(&search("  138057")).replace("UTF-8", enc.label());
            let (d, req) =
                read_request(RequestKind::Single, &encode(&text, enc), FACILITY).unwrap();
            let OqsRequest::Single { header, search } = &req else {
                panic!()
            };
            let again = render_request(
                &header.echo,
                d.encoding,
                &RequestBody::Searches(vec![search.clone()]),
            );
            let (_, back) =
                read_request(RequestKind::Single, &encode(&again, enc), FACILITY).unwrap();
            assert_eq!(back, req, "{again}");
        }
    }

    /// The parser under hostile input: it never panics, and always answers a request, a rejection
    /// or "incomplete". Bounded in CI; a longer run:
    /// `PROPTEST_CASES=100000 cargo test -p onshi-edge --lib mailbox::xml::tests::fuzz`.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn element_name() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("XmlMsg".to_string()),
                Just("MessageHeader".to_string()),
                Just("MessageBody".to_string()),
                Just(SEARCH.to_string()),
                Just("InsurerNumber".to_string()),
                Just("Birthdate".to_string()),
                "[a-zA-Z_][a-zA-Z0-9_.:-]{0,12}",
                "\\PC{1,6}",
            ]
        }

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[0-9 ]{0,10}",
                "\\PC{0,12}",
                Just("&amp;&#x41;&#65;&bogus;&#xFFFFFFFF;".to_string()),
                Just("<![CDATA[x]]>".to_string()),
                Just("令和8年4月1日".to_string()),
            ]
        }

        /// A document: valid-looking requests with random mutations, deep nesting, many children.
        fn document() -> impl Strategy<Value = String> {
            let leaf = (element_name(), text()).prop_map(|(n, t)| format!("<{n}>{t}</{n}>"));
            let tree = leaf.prop_recursive(8, 64, 6, |inner| {
                (element_name(), prop::collection::vec(inner, 0..6))
                    .prop_map(|(n, kids)| format!("<{n}>{}</{n}>", kids.concat()))
            });
            prop_oneof![
                tree.clone()
                    .prop_map(|t| format!("<?xml version=\"1.0\"?><XmlMsg>{t}</XmlMsg>")),
                tree,
                (1usize..200).prop_map(|d| format!(
                    "<XmlMsg>{}{}",
                    "<a>".repeat(d),
                    "</a>".repeat(d)
                )),
                (1usize..5000).prop_map(|d| "<a>".repeat(d)),
                "[A-Z]{0,4}".prop_map(|s| single(&search("  138057")).replace("138057", &s)),
            ]
        }

        fn check(kind: RequestKind, bytes: &[u8]) {
            // Any outcome but a panic is fine: a request, a rejection naming its element, or
            // incomplete.
            let _ = read_request(kind, bytes, FACILITY);
        }

        fn kind() -> impl Strategy<Value = RequestKind> {
            prop_oneof![
                Just(RequestKind::Single),
                Just(RequestKind::BatchUpload),
                Just(RequestKind::BatchDownload),
            ]
        }

        proptest! {
            #[test]
            fn documents_never_panic(k in kind(), doc in document(), sjis in any::<bool>(), cut in any::<prop::sample::Index>()) {
                let bytes = if sjis {
                    encode(&doc.replacen("?>", " encoding=\"Shift_JIS\"?>", 1), TextEncoding::ShiftJis)
                } else {
                    doc.into_bytes()
                };
                check(k, &bytes);
                // Every prefix a writer might leave behind.
                check(k, &bytes[..cut.index(bytes.len() + 1)]);
            }

            #[test]
            fn garbage_bytes_never_panic(k in kind(), bytes in prop::collection::vec(any::<u8>(), 0..2048), decl in prop_oneof![Just(""), Just("<?xml version=\"1.0\" encoding=\"Shift_JIS\"?>"), Just("<?xml version=\"1.0\" encoding=\"UTF-8\"?><XmlMsg>"), Just("\u{feff}")]) {
                let mut all = decl.as_bytes().to_vec();
                all.extend(bytes);
                check(k, &all);
            }

            #[test]
            fn mutated_requests_never_panic(k in kind(), at in any::<prop::sample::Index>(), with in prop::collection::vec(any::<u8>(), 0..8), delete in 0usize..8) {
                let mut bytes = single(&search("  138057")).into_bytes();
                let i = at.index(bytes.len());
                let end = (i + delete).min(bytes.len());
                bytes.splice(i..end, with);
                check(k, &bytes);
            }
        }
    }
}
