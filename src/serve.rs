//! A small static file server on 127.0.0.1 for the browser page (`ess-wgpu serve web`): GET and
//! HEAD of files under one folder, with the content types a page needs (`application/wasm` for
//! WebAssembly's streaming compile). Loopback only, read only, no directory listings; one thread
//! per connection. (It builds for wasm32 as std does, where binding fails: a page serves nothing.)

use crate::error::{Error, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

/// A listener on 127.0.0.1:`port` (0: any free port) serving `root`.
pub struct Server {
    listener: TcpListener,
    root: PathBuf,
}

impl Server {
    pub fn bind(root: &Path, port: u16) -> Result<Self> {
        if !root.join("index.html").is_file() {
            return Err(Error::config(
                "serve",
                root.display(),
                "a folder with an index.html (the page: web/)",
            ));
        }
        let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| Error::Io {
            path: format!("127.0.0.1:{port}"),
            source: e,
        })?;
        Ok(Server {
            listener,
            root: root.to_path_buf(),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serve until the process ends.
    pub fn run(self) {
        for stream in self.listener.incoming().flatten() {
            let root = self.root.clone();
            std::thread::spawn(move || {
                let _ = respond(&root, stream);
            });
        }
    }
}

fn respond(root: &Path, mut stream: TcpStream) -> std::io::Result<()> {
    let mut request = String::new();
    BufReader::new(&stream).read_line(&mut request)?;
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let file = resolve(root, path);
    let (status, body, kind) = match (
        method,
        file.and_then(|f| Some((std::fs::read(&f).ok()?, f))),
    ) {
        ("GET" | "HEAD", Some((body, f))) => ("200 OK", body, content_type(&f)),
        ("GET" | "HEAD", None) => ("404 Not Found", b"not found\n".to_vec(), "text/plain"),
        _ => ("405 Method Not Allowed", Vec::new(), "text/plain"),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    Ok(())
}

/// The file a request path names under `root`; none for anything that would leave it.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = root.join(rel);
    Some(if full.is_dir() {
        full.join("index.html")
    } else {
        full
    })
}

fn content_type(f: &Path) -> &'static str {
    match f.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_stay_under_the_root() {
        let root = Path::new("/srv/web");
        assert_eq!(
            resolve(root, "/pkg/web.js"),
            Some(PathBuf::from("/srv/web/pkg/web.js"))
        );
        for bad in ["/../etc/passwd", "/pkg/../../x", "/./x"] {
            assert_eq!(resolve(root, bad), None, "{bad}");
        }
    }
}
