//! ARM resource ids: parsing, building and the resource type they name.

use std::fmt;

/// A resource id such as
/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}`.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceId {
    pub subscription: String,
    pub resource_group: Option<String>,
    /// `Microsoft.Network`; empty for a resource group itself.
    pub namespace: String,
    /// `(type, name)` pairs: `[("virtualNetworks","v"),("subnets","s")]`.
    pub segments: Vec<(String, String)>,
}

impl ResourceId {
    /// A resource group.
    pub fn resource_group(subscription: &str, rg: &str) -> Self {
        ResourceId {
            subscription: subscription.into(),
            resource_group: Some(rg.into()),
            namespace: String::new(),
            segments: vec![],
        }
    }

    /// A top-level resource in a resource group.
    pub fn new(subscription: &str, rg: &str, namespace: &str, kind: &str, name: &str) -> Self {
        ResourceId {
            subscription: subscription.into(),
            resource_group: Some(rg.into()),
            namespace: namespace.into(),
            segments: vec![(kind.into(), name.into())],
        }
    }

    /// A child resource (`subnets/{name}` under a VNet).
    pub fn child(&self, kind: &str, name: &str) -> Self {
        let mut id = self.clone();
        id.segments.push((kind.into(), name.into()));
        id
    }

    /// The resource's own name (the resource group's name for a group).
    pub fn name(&self) -> &str {
        match self.segments.last() {
            Some((_, n)) => n,
            None => self.resource_group.as_deref().unwrap_or(&self.subscription),
        }
    }

    /// An extension resource of this one, such as a role assignment at this
    /// scope: `{self}/providers/{namespace}/{kind}/{name}`.
    pub fn extension(&self, namespace: &str, kind: &str, name: &str) -> Self {
        self.child("providers", namespace).child(kind, name)
    }

    /// `Microsoft.Network/virtualNetworks/subnets`, or
    /// `Microsoft.Resources/resourceGroups` for a group. An extension
    /// resource has its own type (`Microsoft.Authorization/roleAssignments`).
    pub fn resource_type(&self) -> String {
        if self.segments.is_empty() {
            return "Microsoft.Resources/resourceGroups".into();
        }
        let start = self
            .segments
            .iter()
            .rposition(|(k, _)| k.eq_ignore_ascii_case("providers"));
        let (mut t, rest) = match start {
            Some(i) => (self.segments[i].1.clone(), &self.segments[i + 1..]),
            None => (self.namespace.clone(), &self.segments[..]),
        };
        for (kind, _) in rest {
            t.push('/');
            t.push_str(kind);
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
        let mut id = ResourceId {
            subscription: parts[1].into(),
            resource_group: None,
            namespace: String::new(),
            segments: vec![],
        };
        let mut rest = &parts[2..];
        if rest.len() >= 2 && rest[0].eq_ignore_ascii_case("resourceGroups") {
            id.resource_group = Some(rest[1].into());
            rest = &rest[2..];
        }
        if rest.is_empty() {
            return if id.resource_group.is_some() {
                Ok(id)
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
        id.namespace = rest[1].into();
        for pair in rest[2..].chunks(2) {
            if pair[0].is_empty() || pair[1].is_empty() {
                return Err(bad());
            }
            id.segments.push((pair[0].into(), pair[1].into()));
        }
        Ok(id)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/subscriptions/{}", self.subscription)?;
        if let Some(rg) = &self.resource_group {
            write!(f, "/resourceGroups/{rg}")?;
        }
        if !self.segments.is_empty() {
            write!(f, "/providers/{}", self.namespace)?;
            for (k, n) in &self.segments {
                write!(f, "/{k}/{n}")?;
            }
        }
        Ok(())
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
        id.to_string()
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
}
