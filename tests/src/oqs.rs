//! OQS request files as receipt computers write them (the mailbox tests, the at-rest scan).

use serde_json::Value;

use crate::TODAY;

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// `YYYY-MM-DD` as the file interface writes dates.
pub fn ymd(date: &str) -> String {
    date.replace('-', "")
}

/// A search-info element for a registry period.
pub fn search_info(q: &Value) -> String {
    format!(
        "<QualificationConfirmSearchInfo><InsurerNumber>{:>8}</InsurerNumber><InsuredCardSymbol>{}</InsuredCardSymbol><InsuredIdentificationNumber>{}</InsuredIdentificationNumber><InsuredBranchNumber>{}</InsuredBranchNumber><Birthdate>{}</Birthdate><LimitApplicationCertificateRelatedConsFlg>0</LimitApplicationCertificateRelatedConsFlg></QualificationConfirmSearchInfo>",
        str_of(&q["insurer_number"]),
        str_of(&q["symbol"]),
        str_of(&q["number"]),
        str_of(&q["branch"]),
        ymd(str_of(&q["birth_date"])),
    )
}

/// A request document (UTF-8 unless `encoding` says otherwise) with `body` in its MessageBody.
pub fn request_doc(encoding: &str, facility: &str, id: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"{encoding}\" standalone=\"no\"?>\n<XmlMsg>\n  <MessageHeader>\n    <QualificationConfirmationDate>{}</QualificationConfirmationDate>\n    <MedicalInstitutionCode>{facility}</MedicalInstitutionCode>\n    <ArbitraryFileIdentifier>{id}</ArbitraryFileIdentifier>\n  </MessageHeader>\n  <MessageBody>\n    {body}\n  </MessageBody>\n</XmlMsg>\n",
        ymd(TODAY)
    )
}

/// The result file's name for request file `req` (`…req…` → `…res…`).
pub fn result_name(req: &str) -> String {
    let (head, rest) = req.split_at(10);
    format!("{head}res{}", &rest[3..])
}
