//! The object kinds of the resources file and of etcd's key layout.

/// The object kinds of the resources file, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `routes`
    Routes,
    /// `services`
    Services,
    /// `upstreams`
    Upstreams,
    /// `ssls`
    Ssls,
    /// `ca_certificates`
    CaCertificates,
    /// `consumers` (keyed by `username`)
    Consumers,
    /// `plugin_configs`
    PluginConfigs,
    /// `global_rules`
    GlobalRules,
}

impl Kind {
    /// Every kind, in the order the file lists them.
    pub const ALL: [Kind; 8] = [
        Kind::Routes,
        Kind::Services,
        Kind::Upstreams,
        Kind::Ssls,
        Kind::CaCertificates,
        Kind::Consumers,
        Kind::PluginConfigs,
        Kind::GlobalRules,
    ];

    /// How many kinds there are.
    pub const COUNT: usize = Kind::ALL.len();

    /// The top-level key in the resources file and the URL segment
    /// (`/apisix/admin/<segment>`, APISIX's names; `ca_certificates` is Pylon's).
    pub fn segment(self) -> &'static str {
        match self {
            Kind::Routes => "routes",
            Kind::Services => "services",
            Kind::Upstreams => "upstreams",
            Kind::Ssls => "ssls",
            Kind::CaCertificates => "ca_certificates",
            Kind::Consumers => "consumers",
            Kind::PluginConfigs => "plugin_configs",
            Kind::GlobalRules => "global_rules",
        }
    }

    /// The kind for a URL segment.
    pub fn from_segment(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.segment() == s)
    }

    /// One object of this kind, in words.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Routes => "route",
            Kind::Services => "service",
            Kind::Upstreams => "upstream",
            Kind::Ssls => "ssl",
            Kind::CaCertificates => "CA certificate",
            Kind::Consumers => "consumer",
            Kind::PluginConfigs => "plugin config",
            Kind::GlobalRules => "global rule",
        }
    }

    /// The field that names an object of this kind: `username` for consumers (APISIX keys
    /// them by it), `id` for the rest.
    pub fn id_field(self) -> &'static str {
        match self {
            Kind::Consumers => "username",
            _ => "id",
        }
    }

    /// Whether the admin API's `POST` (a generated id) applies. APISIX refuses it for
    /// consumers (named by their username), plugin configs and global rules (405).
    pub fn generated_ids(self) -> bool {
        !matches!(
            self,
            Kind::Consumers | Kind::PluginConfigs | Kind::GlobalRules
        )
    }

    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}
