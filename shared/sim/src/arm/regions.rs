//! The regions the simulator knows, with the availability zones each offers.
//!
//! Source: the Azure regions list (learn.microsoft.com/azure/reliability/regions-list):
//! programmatic name and whether the region has availability zones (all such regions
//! offer zones 1, 2 and 3).

/// (programmatic name, has availability zones).
pub(crate) const REGIONS: &[(&str, bool)] = &[
    ("australiacentral", false),
    ("australiacentral2", false),
    ("australiaeast", true),
    ("australiasoutheast", false),
    ("austriaeast", true),
    ("belgiumcentral", true),
    ("brazilsouth", true),
    ("brazilsoutheast", false),
    ("canadacentral", true),
    ("canadaeast", false),
    ("centralindia", true),
    ("centralus", true),
    ("chilecentral", true),
    ("eastasia", true),
    ("eastus", true),
    ("eastus2", true),
    ("francecentral", true),
    ("francesouth", false),
    ("germanynorth", false),
    ("germanywestcentral", true),
    ("indonesiacentral", true),
    ("israelcentral", true),
    ("italynorth", true),
    ("japaneast", true),
    ("japanwest", true),
    ("jioindiacentral", false),
    ("jioindiawest", false),
    ("koreacentral", true),
    ("koreasouth", false),
    ("malaysiawest", true),
    ("mexicocentral", true),
    ("newzealandnorth", true),
    ("northcentralus", false),
    ("northeurope", true),
    ("norwayeast", true),
    ("norwaywest", false),
    ("polandcentral", true),
    ("qatarcentral", true),
    ("southafricanorth", true),
    ("southafricawest", false),
    ("southcentralus", true),
    ("southeastasia", true),
    ("southindia", false),
    ("spaincentral", true),
    ("swedencentral", true),
    ("switzerlandnorth", true),
    ("switzerlandwest", false),
    ("uaecentral", false),
    ("uaenorth", true),
    ("uksouth", true),
    ("ukwest", false),
    ("westcentralus", false),
    ("westeurope", true),
    ("westindia", false),
    ("westus", false),
    ("westus2", true),
    ("westus3", true),
];

/// Normalises a location as ARM does: case and spaces do not matter ("West Europe").
pub(crate) fn normalize(location: &str) -> String {
    location.replace(' ', "").to_ascii_lowercase()
}

/// The zones a region offers; `None` when the region is unknown.
pub(crate) fn zones(location: &str) -> Option<&'static [&'static str]> {
    let l = normalize(location);
    REGIONS
        .iter()
        .find(|(n, _)| *n == l)
        .map(|(_, z)| if *z { &["1", "2", "3"][..] } else { &[][..] })
}

/// Every known region's programmatic name, comma-separated (for error messages).
pub(crate) fn all() -> String {
    REGIONS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(",")
}
