//! Requests for plugin tests: any method, headers in, status + headers + body out.

use std::collections::HashMap;

/// A response as the client saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names lower case; repeated headers joined with ", ".
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Sends `method url` with `headers`, following no redirects.
pub fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let mut req = client.request(method.parse().unwrap(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let mut map: HashMap<String, String> = HashMap::new();
    for (k, v) in resp.headers() {
        let v = v.to_str().unwrap_or("").to_string();
        map.entry(k.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    Answer {
        status,
        headers: map,
        body: resp.text().unwrap(),
    }
}

/// `GET url` with `headers`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    send("GET", url, headers)
}
