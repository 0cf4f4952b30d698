//! The node's files besides its peers: the data directory and the key.

use std::path::Path;

use shoal_identity::Keypair;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Longest key file read: the key is 64 hex digits and a line ending.
const MAX_KEY_FILE: u64 = 1024;

/// Loads the key from `path` (64 hex digits), or creates it there with a
/// new key, readable by the owner only.
pub(crate) fn load_or_create_key(path: &Path) -> Result<Keypair, String> {
    let at = |e: &dyn std::fmt::Display| format!("key file {}: {e}", path.display());
    match std::fs::File::open(path) {
        Ok(file) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_KEY_FILE), &mut text)
                .map_err(|e| at(&e))?;
            let seed = unhex(&text).ok_or_else(|| at(&"expected 64 hex digits"))?;
            Ok(Keypair::from_secret_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::try_generate().map_err(|e| at(&e))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(|e| at(&e))?;
            std::io::Write::write_all(&mut file, hex(&*key.secret_bytes()).as_bytes())
                .map_err(|e| at(&e))?;
            Ok(key)
        }
        Err(e) => Err(at(&e)),
    }
}
