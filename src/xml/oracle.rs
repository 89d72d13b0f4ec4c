//! The oracle of the framer's randomised test and of its fuzz target (`fuzz/`, which
//! includes this file by path): quick-xml's strict reading of a whole document.

/// quick-xml's strict reading of a whole document: matched end tags, checked
/// attributes, UTF-8, known references.
pub fn strictly_well_formed(doc: &[u8]) -> bool {
    use quick_xml::events::Event;
    let Ok(text) = std::str::from_utf8(doc) else {
        return false;
    };
    let mut r = quick_xml::Reader::from_str(text);
    r.config_mut().check_end_names = true;
    r.config_mut().check_comments = true;
    loop {
        match r.read_event() {
            Err(_) => return false,
            Ok(Event::Eof) => return true,
            Ok(Event::Start(e) | Event::Empty(e)) => {
                for a in e.attributes().with_checks(true) {
                    let Ok(a) = a else { return false };
                    if a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .is_err()
                    {
                        return false;
                    }
                }
            }
            Ok(Event::GeneralRef(g)) => {
                let name: &str = &g;
                let char_ok = g.resolve_char_ref().is_ok_and(|c| c.is_some());
                if !char_ok && !matches!(name, "lt" | "gt" | "amp" | "apos" | "quot") {
                    return false;
                }
            }
            Ok(_) => {}
        }
    }
}
