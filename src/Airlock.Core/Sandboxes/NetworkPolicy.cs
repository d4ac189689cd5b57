namespace Airlock.Core.Sandboxes;

/// <summary>What a sandbox may do egress with when no rule matches.</summary>
public enum EgressDefault
{
    /// <summary>Nothing leaves but what an <see cref="NetworkPolicy.Allow"/> rule names (Airlock's default).</summary>
    Deny,
    /// <summary>Everything leaves but what a <see cref="NetworkPolicy.Deny"/> rule names (an operator's explicit choice).</summary>
    Allow,
}

/// <summary>
/// One egress destination: a host name (<c>pypi.org</c>), a wildcard (<c>*.githubusercontent.com</c>) or a CIDR
/// (<c>10.0.0.0/8</c>), optionally limited to ports (empty: any port).
/// </summary>
public sealed record EgressRule(string Destination)
{
    public IReadOnlyList<int> Ports { get; init; } = [];
}

/// <summary>
/// A sandbox's network policy, decided by the lifecycle's policy seam and enforced by the network manager (netns
/// firewall) and, with the egress door, by the proxy and DNS. <see cref="DenyAll"/> is the default.
/// </summary>
public sealed record NetworkPolicy
{
    /// <summary>No egress at all; only the host reaches the sandbox's agent (and, with the ingress door, its exposed ports).</summary>
    public static NetworkPolicy DenyAll { get; } = new();

    public EgressDefault Default { get; init; } = EgressDefault.Deny;

    /// <summary>Destinations allowed when <see cref="Default"/> is deny.</summary>
    public IReadOnlyList<EgressRule> Allow { get; init; } = [];

    /// <summary>Destinations denied even when <see cref="Default"/> is allow (deny wins over allow).</summary>
    public IReadOnlyList<EgressRule> Deny { get; init; } = [];

    /// <summary>Whether the sandbox's exposed ports are reachable without a traffic token.</summary>
    public bool PublicIngress { get; init; }

    /// <summary>True when nothing at all may leave the sandbox.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public bool IsDenyAll => Default == EgressDefault.Deny && Allow.Count == 0;
}
