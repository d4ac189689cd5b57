namespace Airlock.Networking;

/// <summary>Settings of <see cref="NetnsNetworkManager"/>; the defaults are the agreed layout.</summary>
public sealed record NetworkOptions
{
    /// <summary>Directory holding the per-sandbox index leases (<c>leases/&lt;sandboxId&gt;</c>).</summary>
    public string StateDir { get; init; } = "/var/lib/airlock/network";

    /// <summary>
    /// Host-wide allocation lock. Host addresses are a host-wide resource, so every airlockd (whatever its
    /// data directory) takes this same lock while picking an index and labelling its interface.
    /// </summary>
    public string LockPath { get; init; } = "/run/airlock/network.lock";

    /// <summary>First two octets of the per-sandbox host addresses (host end of each veth).</summary>
    public string HostPrefix { get; init; } = "10.213";

    /// <summary>The fixed address every sandbox has on its <c>eth0</c>.</summary>
    public string SandboxAddress { get; init; } = "10.254.0.2";

    /// <summary>The namespace's own address on a microVM's tap device; the guest's default route points at it.</summary>
    public string GuestGateway { get; init; } = "10.254.0.1";

    /// <summary>The only port the host may open inside a sandbox (the guest agent).</summary>
    public int AgentPort { get; init; } = 49983;

    /// <summary>Prefix of the namespace name; the sandbox id follows.</summary>
    public string NamespacePrefix { get; init; } = "airlock-";

    /// <summary>Prefix of the host-side interface name; the first 11 characters of the sandbox id follow.</summary>
    public string InterfacePrefix { get; init; } = "alk";

    /// <summary>Route metric base; a sandbox's host route gets <c>RouteMetricBase + index</c>.</summary>
    public int RouteMetricBase { get; init; } = 1000;

    /// <summary>How long one <c>ip</c>/<c>nft</c> invocation may take.</summary>
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>How long <see cref="NetnsNetworkManager.ConnectAsync"/> waits for a TCP handshake.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How many sandboxes fit: indices 0..MaxSandboxes-1 map to HostPrefix.(i/254).(i%254+1).</summary>
    public int MaxSandboxes { get; init; } = 256 * 254;
}
