//! The file mailbox under attack (issue 14, items 1–5): the share is written by other machines, so
//! every file, name and link in it is hostile. Real files in a real mailbox, the edge's real
//! watcher, a real reconciler over QUIC, real SIGKILLs. Each test is the reproduction of one
//! finding of the review.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Pki, TODAY, TestDir, reconciler_with_registry, wait_until,
};
use serde_json::Value;

const RESULT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

struct Mailbox {
    root: PathBuf,
    staging: PathBuf,
}

impl Mailbox {
    fn new(t: &TestDir) -> Mailbox {
        let staging = t.join("staging");
        std::fs::create_dir_all(&staging).unwrap();
        let root = t.join("mailbox");
        for d in ["req", "res", "face", "err", "done"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Mailbox { root, staging }
    }

    fn dir(&self, folder: &str) -> PathBuf {
        self.root.join(folder)
    }

    fn drop_file(&self, name: &str, bytes: &[u8]) {
        let tmp = self.staging.join(name);
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.dir("req").join(name)).unwrap();
    }

    /// Every name in `folder` (any kind of entry), sorted; dot files left out.
    fn names(&self, folder: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir(folder))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn wait_for(&self, folder: &str, name: &str) {
        let p = self.dir(folder).join(name);
        wait_until(RESULT_TIMEOUT, POLL, || std::fs::symlink_metadata(&p).ok())
            .unwrap_or_else(|| panic!("{folder}/{name:?} never appeared; {}", self.listing()));
    }

    /// The reason file in `err/` that explains `name` (its name may be shortened).
    fn reason_of(&self, name: &str) -> String {
        let shown = format!("file: {}\n", name.escape_debug());
        wait_until(RESULT_TIMEOUT, POLL, || {
            self.names("err")
                .into_iter()
                .filter(|n| n.ends_with(".reason.txt"))
                .filter_map(|n| std::fs::read_to_string(self.dir("err").join(n)).ok())
                .find(|t| t.starts_with(&shown))
        })
        .unwrap_or_else(|| panic!("no reason file for {name:?}; {}", self.listing()))
    }

    fn listing(&self) -> String {
        ["req", "res", "err", "done"]
            .iter()
            .map(|f| format!("{f}/ {:?}", self.names(f)))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Every byte of every regular file under `res/`, `err/` and `done/`.
    fn all_written_text(&self) -> String {
        let mut all = String::new();
        for f in ["res", "err", "done", "face"] {
            for e in std::fs::read_dir(self.dir(f)).unwrap().flatten() {
                if e.file_type().unwrap().is_file() {
                    all.push_str(&String::from_utf8_lossy(
                        &std::fs::read(e.path()).unwrap_or_default(),
                    ));
                }
            }
        }
        all
    }
}

fn result_name(req: &str) -> String {
    let (head, rest) = req.split_at(10);
    format!("{head}res{}", &rest[3..])
}

fn search_info(q: &Value) -> String {
    format!(
        "<QualificationConfirmSearchInfo><InsurerNumber>{:>8}</InsurerNumber><InsuredCardSymbol>{}</InsuredCardSymbol><InsuredIdentificationNumber>{}</InsuredIdentificationNumber><InsuredBranchNumber>{}</InsuredBranchNumber><Birthdate>{}</Birthdate><LimitApplicationCertificateRelatedConsFlg>0</LimitApplicationCertificateRelatedConsFlg></QualificationConfirmSearchInfo>",
        str_of(&q["insurer_number"]),
        str_of(&q["symbol"]),
        str_of(&q["number"]),
        str_of(&q["branch"]),
        str_of(&q["birth_date"]).replace('-', ""),
    )
}

/// A single check for `q`; `extra` goes into the body (unknown elements are tolerated).
fn single_request(q: &Value, id: &str, extra: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<XmlMsg>\n<MessageHeader><QualificationConfirmationDate>{}</QualificationConfirmationDate><MedicalInstitutionCode>{FACILITY_A}</MedicalInstitutionCode><ArbitraryFileIdentifier>{id}</ArbitraryFileIdentifier></MessageHeader>\n<MessageBody>{}{extra}</MessageBody>\n</XmlMsg>\n",
        TODAY.replace('-', ""),
        search_info(q)
    )
}

fn edge_opts(t: &TestDir, pki: &Pki, rec: std::net::SocketAddr, mb: &Mailbox) -> EdgeOpts {
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), pki, rec);
    opts.mailbox = Some(mb.root.clone());
    opts.deadline_ms = Some(1000);
    opts.mailbox_settle_ms = Some(50);
    opts.mailbox_incomplete_ms = Some(1500);
    opts
}

fn export_text(edge: &Edge) -> String {
    let out = edge.cli(&["export"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn mailbox_records(edge: &Edge) -> Vec<Value> {
    export_text(edge)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("each export line is JSON"))
        .filter(|l| l["record"] == "mailbox")
        .collect()
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// Item 1: ~60,000 nested elements in ~420 KB overflowed the stack at every start. Now it goes to
/// `err/` with the element path, and the edge keeps answering.
#[test]
fn a_deeply_nested_file_goes_to_err_with_its_path_and_the_edge_keeps_serving() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("hostile-deep");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let mb = Mailbox::new(&t);
    let edge = Edge::start(&t, edge_opts(&t, &pki, rec.addr, &mb));
    edge.wait_online();
    let depth = 60_000;
    let deep = format!(
        "<?xml version=\"1.0\"?><XmlMsg>{}{}</XmlMsg>",
        "<a>".repeat(depth),
        "</a>".repeat(depth)
    );
    assert!(deep.len() > 400_000 && deep.len() < 512 * 1024);
    // A batch upload may be that large; a single check may not, so it would be refused for its size.
    let name = "OQSmuquc01req_deep.xml";
    mb.drop_file(name, deep.as_bytes());
    mb.wait_for("err", name);
    let reason = mb.reason_of(name);
    assert!(reason.contains("XmlMsg/a/a/a"), "{reason}");
    assert!(reason.contains("levels deep"), "{reason}");
    // Still serving: the next file is answered.
    let person = reg.valid_people(0, 1)[0];
    let good = "OQSsiquc01req_after_deep.xml";
    mb.drop_file(good, single_request(person, "D-1", "").as_bytes());
    mb.wait_for("res", &result_name(good));
    mb.wait_for("done", good);
    drop(rec);
}

/// Item 1: a file in hand each time the edge died is quarantined on the next start after
/// `MAX_ATTEMPTS` (3), never crash-looped. The edge is SIGKILLed while the file is in hand (its
/// check waiting on a reconciler stopped with SIGSTOP), three times.
#[test]
fn a_file_in_hand_whenever_the_edge_died_is_quarantined_after_three_attempts() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("hostile-crashloop");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let mb = Mailbox::new(&t);
    let mut opts = edge_opts(&t, &pki, rec.addr, &mb);
    // Long enough that the check is still waiting for the stopped reconciler when killed.
    opts.deadline_ms = Some(20_000);
    let person = reg.valid_people(0, 1)[0];
    let name = "OQSsiquc01req_loop.xml";
    let request = single_request(person, "L-1", "");
    let mut edge = Edge::start(&t, opts);
    for attempt in 1..=3 {
        edge.wait_online();
        rec.proc.signal(libc::SIGSTOP);
        mb.drop_file(name, request.as_bytes());
        // The attempt is on disk before the file is handled: wait for the edge to say it read it.
        let reads = wait_until(RESULT_TIMEOUT, POLL, || {
            let n = edge
                .proc
                .stderr()
                .matches("mailbox: request file read")
                .count();
            (n >= attempt).then_some(n)
        })
        .unwrap_or_else(|| {
            panic!(
                "attempt {attempt}: the file was never read; {}",
                mb.listing()
            )
        });
        assert_eq!(reads, attempt);
        edge.kill9();
        rec.proc.signal(libc::SIGCONT);
        assert!(
            mb.names("done").is_empty() && mb.names("res").is_empty(),
            "killed in hand: {}",
            mb.listing()
        );
        // Taken out while the edge is down, so the next start's rescan does not answer it at once.
        std::fs::rename(mb.dir("req").join(name), mb.staging.join(name)).unwrap();
        edge = edge.restart();
    }
    edge.wait_online();
    // Back in req/: the fourth start of its handling does not happen; it is quarantined.
    std::fs::rename(mb.staging.join(name), mb.dir("req").join(name)).unwrap();
    mb.wait_for("err", name);
    let reason = mb.reason_of(name);
    assert!(reason.contains("stopped 3 times"), "{reason}");
    mb.wait_for("res", &result_name(name));
    let res = std::fs::read_to_string(mb.dir("res").join(result_name(name))).unwrap();
    assert!(res.contains("<SegmentOfResult>9<"), "{res}");
    // The rest keeps flowing.
    let good = "OQSsiquc01req_after_loop.xml";
    mb.drop_file(good, single_request(person, "L-2", "").as_bytes());
    mb.wait_for("done", good);
    assert!(edge.proc.stderr().contains("quarantined to err/"));
    drop(rec);
}

/// Item 2: a link in `req/` (made before the edge starts, or while it runs) is never followed:
/// moved to `err/` as a link; the secret it points at never reaches `res/`, the export or the
/// logs. A FIFO and a folder named like requests go the same way, and do not block the mailbox.
#[test]
fn links_fifos_and_folders_named_like_requests_go_to_err_and_the_secret_never_leaks() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("hostile-links");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let mb = Mailbox::new(&t);
    let person = reg.valid_people(0, 1)[0];
    // The secret is even a valid request: followed, it would be answered and echoed.
    let marker = "SECRET-0c5d1f";
    let secret = t.join("private.key");
    let secret_text = single_request(person, marker, "");
    std::fs::write(&secret, &secret_text).unwrap();
    let before = "OQSsiquc01req_link_before.xml";
    std::os::unix::fs::symlink(&secret, mb.dir("req").join(before)).unwrap();
    let edge = Edge::start(&t, edge_opts(&t, &pki, rec.addr, &mb));
    edge.wait_online();
    let during = "OQSsiquc01req_link_during.xml";
    std::os::unix::fs::symlink(&secret, mb.dir("req").join(during)).unwrap();
    let fifo = "OQSsiquc01req_fifo.xml";
    let st = std::process::Command::new("mkfifo")
        .arg(mb.dir("req").join(fifo))
        .status()
        .unwrap();
    assert!(st.success());
    let folder = "OQSsiquc01req_folder.xml";
    std::fs::create_dir(mb.dir("req").join(folder)).unwrap();
    for n in [before, during, fifo, folder] {
        mb.wait_for("err", n);
    }
    for n in [before, during] {
        assert!(is_link(&mb.dir("err").join(n)), "{n} moved as a link");
        assert!(
            mb.reason_of(n).contains("a symbolic link"),
            "{}",
            mb.reason_of(n)
        );
    }
    assert!(
        mb.reason_of(fifo).contains("FIFO"),
        "{}",
        mb.reason_of(fifo)
    );
    assert!(
        mb.reason_of(folder).contains("a directory"),
        "{}",
        mb.reason_of(folder)
    );
    // Still serving.
    let good = "OQSsiquc01req_after_links.xml";
    mb.drop_file(good, single_request(person, "G-1", "").as_bytes());
    mb.wait_for("done", good);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), secret_text);
    assert!(
        !mb.all_written_text().contains(marker),
        "the secret reached the mailbox"
    );
    assert!(
        !export_text(&edge).contains(marker),
        "the secret reached the journal"
    );
    assert!(
        !edge.proc.stderr().contains(marker),
        "the secret reached the log"
    );
    drop(rec);
}

/// Item 3: links planted at every name the old scheme wrote through (`res/.<name>.tmp`, the reason
/// file's `err/.<name>.reason.txt.tmp`) and at the result's own name are never written through.
#[test]
fn links_planted_at_temporary_and_result_names_are_never_written_through() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("hostile-planted");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let mb = Mailbox::new(&t);
    let victim = t.join("victim.journal");
    std::fs::write(&victim, "precious").unwrap();
    let good = "OQSsiquc01req_planted.xml";
    let bad = "OQSsiquc01req_planted_bad.xml";
    let plant = |folder: &str, n: String| {
        std::os::unix::fs::symlink(&victim, mb.dir(folder).join(n)).unwrap();
    };
    plant("res", format!(".{}.tmp", result_name(good)));
    plant("res", format!(".{}.tmp", result_name(bad)));
    plant("err", format!(".{bad}.reason.txt.tmp"));
    let edge = Edge::start(&t, edge_opts(&t, &pki, rec.addr, &mb));
    edge.wait_online();
    let person = reg.valid_people(0, 1)[0];
    // The result's own name is a link too: the result replaces the link, not the victim.
    plant("res", result_name(good));
    mb.drop_file(good, single_request(person, "P-1", "").as_bytes());
    mb.drop_file(bad, b"not xml at all");
    mb.wait_for("done", good);
    mb.wait_for("err", bad);
    let res = mb.dir("res").join(result_name(good));
    assert!(!is_link(&res), "the result is a file of its own");
    assert!(
        std::fs::read_to_string(&res)
            .unwrap()
            .contains("<ArbitraryFileIdentifier>P-1<")
    );
    assert!(mb.reason_of(bad).contains("not well-formed") || mb.reason_of(bad).contains("XML"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    drop(edge);
    drop(rec);
}

/// Item 4: a name too long for its reason file (and for the old temporary name) went unanswered,
/// logging an ERROR every two seconds forever; names with a newline or ESC reached the log raw.
/// Both go to `err/` at once, and the log shows them escaped.
#[test]
fn long_names_and_control_characters_go_to_err_at_once_and_logs_show_them_escaped() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("hostile-names");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let mb = Mailbox::new(&t);
    let edge = Edge::start(&t, edge_opts(&t, &pki, rec.addr, &mb));
    edge.wait_online();
    let person = reg.valid_people(0, 1)[0];
    let request = single_request(person, "N-1", "");
    let long = format!("OQSsiquc01req_{}.xml", "x".repeat(253 - 18));
    assert_eq!(long.len(), 253);
    let forged = "OQSsiquc01req_a\nERROR forged line\u{1b}[31m.xml";
    mb.drop_file(&long, request.as_bytes());
    mb.drop_file(forged, request.as_bytes());
    mb.wait_for("err", &long);
    mb.wait_for("err", forged);
    assert!(
        mb.reason_of(&long).contains("bytes long"),
        "{}",
        mb.reason_of(&long)
    );
    assert!(mb.reason_of(forged).contains("control characters"));
    let reasons: Vec<String> = mb
        .names("err")
        .into_iter()
        .filter(|n| n.ends_with(".reason.txt"))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().all(|n| n.len() <= 255));
    // Never retried: nothing more is logged about them.
    mb.wait_for("res", &result_name(&long));
    let log = edge.proc.stderr();
    assert!(!log.contains('\u{1b}'), "ESC reached the log raw");
    assert!(
        !log.contains("\nERROR forged line"),
        "a newline forged a log line"
    );
    assert!(
        log.contains("\\nERROR forged line"),
        "the name is shown escaped"
    );
    assert!(mb.names("done").is_empty());
    drop(rec);
}

/// Item 5: an oversize request is refused unread (the journal does not grow by its size); an
/// accepted request's arbitrary bytes (unknown elements) are not kept, only the parsed request;
/// the export of many records (streamed in chunks) has every record with what it had.
#[test]
fn oversize_requests_are_refused_and_the_journal_keeps_parsed_requests_not_bytes() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("hostile-size");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let mb = Mailbox::new(&t);
    let edge = Edge::start(&t, edge_opts(&t, &pki, rec.addr, &mb));
    edge.wait_online();
    let people = reg.valid_people(0, 50);
    let junk = |n: usize| format!("<Padding>{}</Padding>", "JUNK-".repeat(n / 5));
    let big = "OQSsiquc01req_big.xml";
    mb.drop_file(
        big,
        single_request(people[0], "Z-1", &junk(100 * 1024)).as_bytes(),
    );
    let padded = "OQSsiquc01req_padded.xml";
    mb.drop_file(
        padded,
        single_request(people[1], "Z-2", &junk(50 * 1024)).as_bytes(),
    );
    mb.wait_for("err", big);
    assert!(
        mb.reason_of(big).contains("at most 65536"),
        "{}",
        mb.reason_of(big)
    );
    mb.wait_for("done", padded);
    // Many records, exported in one streamed answer.
    const N: usize = 200;
    for i in 0..N {
        mb.drop_file(
            &format!("OQSsiquc01req_many_{i:04}.xml"),
            single_request(people[i % people.len()], &format!("M-{i}"), "").as_bytes(),
        );
    }
    wait_until(Duration::from_secs(120), Duration::from_millis(50), || {
        (mb.names("done").len() == N + 1).then_some(())
    })
    .unwrap_or_else(|| panic!("{}", mb.listing()));
    let export = export_text(&edge);
    assert!(
        !export.contains("JUNK-"),
        "the journal kept a file's arbitrary bytes"
    );
    assert!(
        export.len() > 256 * 1024,
        "several chunks: {}",
        export.len()
    );
    let mail = mailbox_records(&edge);
    assert_eq!(mail.len(), N + 2);
    let by_file = |f: &str| mail.iter().find(|m| m["file"] == f).unwrap();
    let refused = by_file(big);
    assert!(refused["request"].is_null());
    assert!(str_of(&refused["reason"]).contains("at most 65536"));
    assert!(
        refused.to_string().len() < 8 * 1024,
        "{}",
        refused.to_string().len()
    );
    // The request as kept: the same checked fields, rendered back.
    let kept = str_of(&by_file(padded)["request"]);
    assert!(kept.contains("<ArbitraryFileIdentifier>Z-2<"), "{kept}");
    assert!(kept.contains(&format!(
        "<Birthdate>{}<",
        str_of(&people[1]["birth_date"]).replace('-', "")
    )));
    let lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let checks = lines.iter().filter(|l| l["record"] == "check").count();
    assert_eq!(checks, N + 1);
    for m in mail
        .iter()
        .filter(|m| str_of(&m["file"]).contains("_many_"))
    {
        assert!(checks > 0 && m["check_id"].is_string(), "{m}");
        assert!(
            str_of(&m["results"][0]["text"]).contains("<QualificationValidity>1<"),
            "{m}"
        );
        assert!(str_of(&m["request"]).contains("<InsurerNumber>"), "{m}");
    }
    drop(rec);
}
