//! Rewriting a response body with regex substitutions (`response-rewrite`'s `filters`):
//! the body is held (decoded when it came gzip, deflate or brotli encoded) until it ends or
//! reaches a size limit, the substitutions run once over it, and what follows the limit
//! passes as it comes (APISIX's `core.response.hold_body_chunk` with
//! `max_resp_body_size`).

use std::io::Write;

use bytes::Bytes;
use http::HeaderValue;
use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

use super::proxy_rewrite::ngx_replacement;

/// `scope`: the first match (`once`, APISIX's default) or all (`global`).
#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `ngx.re.sub`.
    #[default]
    Once,
    /// `ngx.re.gsub`.
    Global,
}

/// One substitution, compiled.
#[derive(Debug)]
pub struct Filter {
    re: Regex,
    replace: Vec<u8>,
    global: bool,
}

impl Filter {
    /// A filter replacing `regex` by `replace` (`$1`, `${1}`, `$$` as in `ngx.re.sub`), with
    /// `ngx.re` `options`: `i` (caseless), `m` (multi-line), `s` (dot matches newline), `x`
    /// (extended); `j`, `o` (JIT, compile once) and `u` (UTF-8) change nothing here.
    ///
    /// Errors: `("regex", why)` or `("options", why)`.
    pub fn new(
        regex: &str,
        replace: &str,
        scope: Scope,
        options: &str,
    ) -> Result<Filter, (&'static str, String)> {
        if regex.is_empty() {
            return Err(("regex", "must not be empty".into()));
        }
        let mut b = RegexBuilder::new(regex);
        for ch in options.chars() {
            match ch {
                'i' => b.case_insensitive(true),
                'm' => b.multi_line(true),
                's' => b.dot_matches_new_line(true),
                'x' => b.ignore_whitespace(true),
                'j' | 'o' | 'u' => &mut b,
                other => {
                    return Err((
                        "options",
                        format!(
                        "option {other:?} is not supported by Pylon (i, m, s, x, j, o and u are)"
                    ),
                    ))
                }
            };
        }
        let re = b
            .build()
            .map_err(|e| ("regex", format!("bad regex: {e}")))?;
        Ok(Filter {
            re,
            replace: ngx_replacement(replace).into_bytes(),
            global: scope == Scope::Global,
        })
    }

    /// `body` with the substitution made.
    pub fn apply(&self, body: Vec<u8>) -> Vec<u8> {
        let out = if self.global {
            self.re.replace_all(&body, self.replace.as_slice())
        } else {
            self.re.replace(&body, self.replace.as_slice())
        };
        match out {
            std::borrow::Cow::Borrowed(_) => body,
            std::borrow::Cow::Owned(o) => o,
        }
    }
}

/// Undoes the body's `Content-Encoding`, chunk by chunk.
pub enum Decoder {
    /// No encoding.
    Identity,
    /// `gzip`.
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    /// `deflate` (zlib-wrapped, RFC 9110 §8.4.1.2).
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    /// `br`.
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

impl Decoder {
    /// The decoder for a `Content-Encoding` value; `None` for one Pylon cannot decode.
    pub fn for_encoding(encoding: Option<&HeaderValue>) -> Option<Decoder> {
        let Some(e) = encoding else {
            return Some(Decoder::Identity);
        };
        let e = e.to_str().ok()?.trim().to_ascii_lowercase();
        Some(match e.as_str() {
            "" | "identity" => Decoder::Identity,
            "gzip" | "x-gzip" => Decoder::Gzip(flate2::write::GzDecoder::new(Vec::new())),
            "deflate" => Decoder::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
            "br" => Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
            _ => return None,
        })
    }

    /// Decodes `data`, appending what comes out to `out`.
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            Decoder::Identity => out.extend_from_slice(data),
            Decoder::Gzip(d) => {
                d.write_all(data)?;
                d.flush()?;
                out.append(d.get_mut());
            }
            Decoder::Deflate(d) => {
                d.write_all(data)?;
                d.flush()?;
                out.append(d.get_mut());
            }
            Decoder::Brotli(d) => {
                d.write_all(data)?;
                d.flush()?;
                out.append(d.get_mut());
            }
        }
        Ok(())
    }

    /// Ends the stream, appending the rest to `out`.
    fn finish(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            Decoder::Identity => {}
            Decoder::Gzip(d) => {
                d.try_finish()?;
                out.append(d.get_mut());
            }
            Decoder::Deflate(d) => {
                d.try_finish()?;
                out.append(d.get_mut());
            }
            Decoder::Brotli(d) => {
                d.close()?;
                out.append(d.get_mut());
            }
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Stage {
    /// Holding the body until it ends or reaches the limit.
    Holding,
    /// Past the limit: decoded pieces pass as they come.
    Passing,
    /// The body could not be decoded: the rest is dropped.
    Broken,
}

/// One response body being rewritten.
pub struct Held {
    decoder: Decoder,
    buf: Vec<u8>,
    max: usize,
    stage: Stage,
}

impl Held {
    /// A body decoded by `decoder`, held up to `max` bytes (decoded).
    pub fn new(decoder: Decoder, max: usize) -> Held {
        Held {
            decoder,
            buf: Vec::new(),
            max,
            stage: Stage::Holding,
        }
    }

    fn decode(&mut self, chunk: Option<Bytes>, end: bool, out: &mut Vec<u8>) {
        if self.stage == Stage::Broken {
            return;
        }
        let mut r = match chunk {
            Some(c) => self.decoder.feed(&c, out),
            None => Ok(()),
        };
        if end && r.is_ok() {
            r = self.decoder.finish(out);
        }
        if let Err(e) = r {
            log::error!("response-rewrite: the upstream's body cannot be decoded: {e}");
            self.stage = Stage::Broken;
        }
    }

    /// Takes the next piece of the body (`body`), replacing it with what to send now.
    pub fn push(&mut self, body: &mut Option<Bytes>, end: bool, filters: &[Filter]) {
        let chunk = body.take();
        if self.stage == Stage::Passing {
            let mut out = Vec::new();
            self.decode(chunk, end, &mut out);
            *body = (!out.is_empty()).then(|| Bytes::from(out));
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        self.decode(chunk, end, &mut buf);
        if !end && buf.len() < self.max {
            self.buf = buf;
            return;
        }
        let rest = if buf.len() > self.max {
            buf.split_off(self.max)
        } else {
            Vec::new()
        };
        let mut out = buf;
        for f in filters {
            out = f.apply(out);
        }
        out.extend_from_slice(&rest);
        if self.stage == Stage::Holding {
            self.stage = Stage::Passing;
        }
        *body = Some(Bytes::from(out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    fn run(held: &mut Held, filters: &[Filter], chunks: &[&[u8]]) -> Vec<u8> {
        let mut sent = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut body = Some(Bytes::copy_from_slice(c));
            held.push(&mut body, i + 1 == chunks.len(), filters);
            if let Some(b) = body {
                sent.extend_from_slice(&b);
            }
        }
        sent
    }

    #[test]
    fn substitutions_once_global_and_with_options() {
        let once = Filter::new(
            "X-Amzn-Trace-Id",
            "X-Amzn-Trace-Id-Replace",
            Scope::Once,
            "jo",
        )
        .unwrap();
        let all = Filter::new("(a)(b)", "$2$1", Scope::Global, "jo").unwrap();
        let caseless = Filter::new("hello", "bye", Scope::Global, "ji").unwrap();
        let mut h = Held::new(Decoder::Identity, 1 << 20);
        let out = run(
            &mut h,
            &[once, all, caseless],
            &[b"X-Amzn-Trace-Id X-Amzn-Trace-Id ", b"ab ab HeLLo"],
        );
        assert_eq!(out, b"X-Amzn-Trace-Id-Replace X-Amzn-Trace-Id ba ba bye");
        assert_eq!(
            Filter::new("a", "b", Scope::Once, "jD").unwrap_err().0,
            "options"
        );
        assert_eq!(
            Filter::new("(", "b", Scope::Once, "jo").unwrap_err().0,
            "regex"
        );
    }

    #[test]
    fn past_the_limit_the_rest_passes_unchanged() {
        let f = Filter::new("a", "b", Scope::Global, "").unwrap();
        let mut h = Held::new(Decoder::Identity, 4);
        assert_eq!(run(&mut h, &[f], &[b"aa", b"aaaa", b"aa"]), b"bbbbaaaa");
    }

    #[test]
    fn gzip_bodies_are_decoded() {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"hello world, hello").unwrap();
        let gz = enc.finish().unwrap();
        let f = Filter::new("hello", "bye", Scope::Global, "jo").unwrap();
        let gzip = HeaderValue::from_static("gzip");
        let mut h = Held::new(Decoder::for_encoding(Some(&gzip)).unwrap(), 1 << 20);
        let (a, b) = gz.split_at(gz.len() / 2);
        assert_eq!(run(&mut h, &[f], &[a, b]), b"bye world, bye");
        assert!(Decoder::for_encoding(Some(&HeaderValue::from_static("zstd"))).is_none());
    }
}
