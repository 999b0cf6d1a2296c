//! ARM resource ids: parsing, building and the resource type they name.

use std::fmt;

/// A resource id such as
/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}`.
///
/// Held as its text, with the leading fixed words spelled as ARM spells them
/// (`subscriptions`, `resourceGroups`, `providers`) whatever case it was
/// parsed from: a saga carries dozens of ids and copies them often, and one
/// string is one allocation a copy where the parts were up to ten.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct ResourceId {
    text: String,
}

const SUBSCRIPTIONS: &str = "/subscriptions/";
const RESOURCE_GROUPS: &str = "/resourceGroups/";
const PROVIDERS: &str = "/providers/";

impl ResourceId {
    /// A resource group.
    pub fn resource_group(subscription: &str, rg: &str) -> Self {
        let mut text = String::with_capacity(
            SUBSCRIPTIONS.len() + subscription.len() + RESOURCE_GROUPS.len() + rg.len(),
        );
        text.push_str(SUBSCRIPTIONS);
        text.push_str(subscription);
        text.push_str(RESOURCE_GROUPS);
        text.push_str(rg);
        ResourceId { text }
    }

    /// A top-level resource in a resource group.
    pub fn new(subscription: &str, rg: &str, namespace: &str, kind: &str, name: &str) -> Self {
        ResourceId::resource_group(subscription, rg).extension(namespace, kind, name)
    }

    /// A child resource (`subnets/{name}` under a VNet).
    pub fn child(&self, kind: &str, name: &str) -> Self {
        self.appended(&[kind, name])
    }

    /// This id with `segments` appended, each after a `/`, in one allocation.
    fn appended(&self, segments: &[&str]) -> Self {
        let len = segments.iter().map(|s| s.len() + 1).sum::<usize>();
        let mut text = String::with_capacity(self.text.len() + len);
        text.push_str(&self.text);
        for segment in segments {
            text.push('/');
            text.push_str(segment);
        }
        ResourceId { text }
    }

    /// The id as ARM writes it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The resource's own name (the resource group's name for a group).
    pub fn name(&self) -> &str {
        self.text.rsplit('/').next().unwrap_or_default()
    }

    /// The resource group the id is in, if any.
    pub fn group(&self) -> Option<&str> {
        self.scope().0
    }

    /// The resource group, if any, and the rest of the id after the
    /// subscription and the group (empty, or from `/providers/` on).
    fn scope(&self) -> (Option<&str>, &str) {
        let rest = &self.text[SUBSCRIPTIONS.len()..];
        let rest = rest.find('/').map_or("", |i| &rest[i..]);
        match rest.strip_prefix(RESOURCE_GROUPS) {
            Some(rg) => match rg.find('/') {
                Some(i) => (Some(&rg[..i]), &rg[i..]),
                None => (Some(rg), ""),
            },
            None => (None, rest),
        }
    }

    /// Whether the id names a resource under a provider, not a subscription
    /// or a resource group.
    pub fn is_provider_resource(&self) -> bool {
        self.provider_pairs().next().is_some()
    }

    /// An extension resource of this one, such as a role assignment at this
    /// scope: `{self}/providers/{namespace}/{kind}/{name}`.
    pub fn extension(&self, namespace: &str, kind: &str, name: &str) -> Self {
        self.appended(&["providers", namespace, kind, name])
    }

    /// `(type, name)` pairs from the first `providers` on:
    /// `[("providers","Microsoft.Network"),("virtualNetworks","v"),("subnets","s")]`.
    fn provider_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut parts = self.scope().1.split('/').skip(1);
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }

    /// `Microsoft.Network/virtualNetworks/subnets`, or
    /// `Microsoft.Resources/resourceGroups` for a group. An extension
    /// resource has its own type (`Microsoft.Authorization/roleAssignments`).
    pub fn resource_type(&self) -> String {
        let mut t = String::new();
        for (kind, name) in self.provider_pairs() {
            if kind.eq_ignore_ascii_case("providers") {
                t.clear();
                t.push_str(name);
            } else {
                t.push('/');
                t.push_str(kind);
            }
        }
        if t.is_empty() {
            return "Microsoft.Resources/resourceGroups".into();
        }
        t
    }

    /// Parses an id; case of the fixed words is not significant.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim_matches('/').split('/').collect();
        let bad = || format!("not an ARM resource id: {s}");
        if parts.len() < 2 || !parts[0].eq_ignore_ascii_case("subscriptions") || parts[1].is_empty()
        {
            return Err(bad());
        }
        let mut text = String::with_capacity(s.len() + 1);
        text.push_str(SUBSCRIPTIONS);
        text.push_str(parts[1]);
        let mut rest = &parts[2..];
        let mut in_group = false;
        if rest.len() >= 2 && rest[0].eq_ignore_ascii_case("resourceGroups") {
            text.push_str(RESOURCE_GROUPS);
            text.push_str(rest[1]);
            in_group = true;
            rest = &rest[2..];
        }
        if rest.is_empty() {
            return if in_group {
                Ok(ResourceId { text })
            } else {
                Err(bad())
            };
        }
        if rest.len() < 4
            || !rest[0].eq_ignore_ascii_case("providers")
            || !rest.len().is_multiple_of(2)
        {
            return Err(bad());
        }
        text.push_str(PROVIDERS);
        text.push_str(rest[1]);
        for pair in rest[2..].chunks(2) {
            if pair[0].is_empty() || pair[1].is_empty() {
                return Err(bad());
            }
            text.push('/');
            text.push_str(pair[0]);
            text.push('/');
            text.push_str(pair[1]);
        }
        Ok(ResourceId { text })
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for ResourceId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl TryFrom<String> for ResourceId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ResourceId::parse(&s)
    }
}

impl From<ResourceId> for String {
    fn from(id: ResourceId) -> String {
        id.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_the_type() {
        let s = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/a";
        let id = ResourceId::parse(s).unwrap();
        assert_eq!(id.to_string(), s);
        assert_eq!(
            id.resource_type(),
            "Microsoft.Network/virtualNetworks/subnets"
        );
        assert_eq!(id.name(), "a");
        let rg = ResourceId::parse("/subscriptions/s1/resourcegroups/rg").unwrap();
        assert_eq!(rg.resource_type(), "Microsoft.Resources/resourceGroups");
        assert!(ResourceId::parse("/subscriptions/s1/resourceGroups/rg/providers/X").is_err());
        assert!(ResourceId::parse("nonsense").is_err());
    }

    #[test]
    fn an_extension_resource_round_trips_with_its_own_type() {
        let vmss = ResourceId::new(
            "s1",
            "rg",
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            "w",
        );
        let ra = vmss.extension("Microsoft.Authorization", "roleAssignments", "g");
        let s = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/w/providers/Microsoft.Authorization/roleAssignments/g";
        assert_eq!(ra.to_string(), s);
        assert_eq!(ResourceId::parse(s).unwrap(), ra);
        assert_eq!(
            ra.resource_type(),
            "Microsoft.Authorization/roleAssignments"
        );
        assert_eq!(ra.name(), "g");
    }

    #[test]
    fn the_fixed_words_are_spelled_as_arm_spells_them_whatever_case_was_parsed() {
        let id = ResourceId::parse(
            "SUBSCRIPTIONS/s1/resourcegroups/rg/PROVIDERS/Microsoft.Network/virtualNetworks/v/",
        )
        .unwrap();
        let built = ResourceId::new("s1", "rg", "Microsoft.Network", "virtualNetworks", "v");
        assert_eq!(id, built);
        assert_eq!(
            id.as_str(),
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v"
        );
        assert_eq!(String::from(id), built.to_string());
    }

    #[test]
    fn its_group_and_whether_it_names_a_provider_resource() {
        let sub_level = ResourceId::parse(
            "/subscriptions/s1/providers/Microsoft.Authorization/roleDefinitions/r",
        )
        .unwrap();
        let group = ResourceId::resource_group("s1", "rg");
        let vnet = ResourceId::new("s1", "rg", "Microsoft.Network", "virtualNetworks", "v");
        let subnet = vnet.child("subnets", "a");
        assert_eq!(
            [&sub_level, &group, &vnet, &subnet].map(|i| i.group()),
            [None, Some("rg"), Some("rg"), Some("rg")]
        );
        assert_eq!(
            [&sub_level, &group, &vnet, &subnet].map(|i| i.is_provider_resource()),
            [true, false, true, true]
        );
        assert_eq!(
            [&sub_level, &group, &vnet, &subnet].map(|i| i.name()),
            ["r", "rg", "v", "a"]
        );
        assert_eq!(
            sub_level.resource_type(),
            "Microsoft.Authorization/roleDefinitions"
        );
        assert!(ResourceId::parse("/subscriptions/s1").is_err());
    }

    #[test]
    fn an_extension_at_a_group_scope_is_written_as_arm_writes_it() {
        let ra = ResourceId::resource_group("s1", "rg").extension(
            "Microsoft.Authorization",
            "roleAssignments",
            "g",
        );
        assert_eq!(
            ra.as_str(),
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Authorization/roleAssignments/g"
        );
        assert_eq!(ResourceId::parse(ra.as_str()).unwrap(), ra);
        assert_eq!(
            ra.resource_type(),
            "Microsoft.Authorization/roleAssignments"
        );
    }

    #[test]
    fn it_travels_in_json_as_its_text_and_bad_text_is_refused() {
        let vnet = ResourceId::new("s1", "rg", "Microsoft.Network", "virtualNetworks", "v");
        let json = serde_json::to_string(&vnet).unwrap();
        assert_eq!(json, format!("\"{vnet}\""));
        assert_eq!(serde_json::from_str::<ResourceId>(&json).unwrap(), vnet);
        let bad = serde_json::from_str::<ResourceId>("\"/subscriptions/s1/whatever\"");
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("not an ARM resource id"));
    }
}
