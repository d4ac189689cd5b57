using System.Globalization;
using System.Net.Sockets;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Networking.Internal;
using Microsoft.Extensions.Logging;

namespace Airlock.Networking;

/// <summary>
/// Gives each sandbox its own network namespace joined to the host by one veth pair, with a
/// default-deny nftables ruleset inside: the host may open TCP to the guest agent port, nothing leaves.
/// </summary>
/// <remarks>
/// <code>
///  host netns                                   netns airlock-&lt;id&gt;  (table inet airlock, policy drop)
///  alk&lt;id[..11]&gt;  10.213.X.Y/32  ── veth ──  eth0  10.254.0.2/32
///  route 10.254.0.2/32 dev alk.. metric 1000+i     route 10.213.X.Y/32 dev eth0   (no default route)
/// </code>
/// Every sandbox has the same inside address; the host tells them apart by binding its socket to the
/// sandbox's host interface (SO_BINDTODEVICE), see <see cref="ConnectAsync"/>.
/// CreateAsync steps: validate id → remove partial pieces of an earlier attempt → lease an index →
/// netns → IPv6 off → [host-wide lock: lease index, veth, alias] → firewall (one nft -f) → addresses →
/// links up → routes. Any failure rolls back everything and releases the lease.
/// </remarks>
public sealed class NetnsNetworkManager : INetworkManager
{
    private readonly NetworkOptions _options;
    private readonly ILogger _logger;
    private readonly IndexAllocator _allocator;

    public NetnsNetworkManager(NetworkOptions options, ILogger<NetnsNetworkManager> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        if (options.AgentPort is <= 0 or > 65535)
        {
            throw new ArgumentException($"AgentPort {options.AgentPort} is not a TCP port.", nameof(options));
        }

        if (!System.Net.IPAddress.TryParse(options.SandboxAddress, out var sandboxIp)
            || sandboxIp.AddressFamily != AddressFamily.InterNetwork)
        {
            throw new ArgumentException($"SandboxAddress '{options.SandboxAddress}' is not an IPv4 address.", nameof(options));
        }

        var octets = options.HostPrefix.Split('.');
        if (octets.Length != 2 || !octets.All(o => byte.TryParse(o, NumberStyles.None, CultureInfo.InvariantCulture, out _)))
        {
            throw new ArgumentException($"HostPrefix '{options.HostPrefix}' must be two IPv4 octets, like 10.213.", nameof(options));
        }

        if (options.InterfacePrefix.Length + 11 > 15)
        {
            throw new ArgumentException("InterfacePrefix must leave room for 11 id characters in a 15-character name.", nameof(options));
        }

        _options = options;
        _logger = logger;
        _allocator = new IndexAllocator(options);
    }

    /// <inheritdoc />
    public Task ApplyPolicyAsync(SandboxNetwork network, NetworkPolicy policy, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(policy);
        // The namespace's firewall is default-deny from its creation; deny-all needs no change.
        EnsureEnforceable(policy);
        return Task.CompletedTask;
    }

    /// <summary>Until the egress door lands, only deny-all can be enforced: anything else is refused, never weakened.</summary>
    private static void EnsureEnforceable(NetworkPolicy policy)
    {
        if (!policy.IsDenyAll)
        {
            throw new NotSupportedException("this network manager enforces only the deny-all egress policy (egress allowlists need the egress proxy)");
        }
    }

    /// <inheritdoc />
    public async Task<SandboxNetwork> CreateAsync(string sandboxId, NetworkPolicy policy, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(policy);
        EnsureEnforceable(policy);
        NetworkNames.ValidateSandboxId(sandboxId);
        var ns = NetworkNames.Namespace(_options, sandboxId);
        var hostIf = NetworkNames.HostInterface(_options, sandboxId);

        var owner = HostInterfaces.List(_options).FirstOrDefault(i => i.Name == hostIf).Alias;
        if (HostInterfaces.ParseAlias(owner) is { } taken && taken.SandboxId != sandboxId)
        {
            throw new NetworkSetupException(
                $"Interface {hostIf} already belongs to sandbox {taken.SandboxId}; ids sharing their first 11 characters cannot run together.");
        }

        if (HostInterfaces.NamespaceExists(ns) || HostInterfaces.Exists(hostIf))
        {
            Log.RemovingPartial(_logger, sandboxId);
            await TeardownAsync(ns, hostIf, _allocator.Find(sandboxId), cancellationToken);
        }

        int? index = null;
        var sandboxAddress = _options.SandboxAddress;
        try
        {
            await IpAsync(["netns", "add", ns], cancellationToken);
            if (Directory.Exists("/proc/sys/net/ipv6"))
            {
                await RunAsync("ip", ["netns", "exec", ns, "sysctl", "-q", "-w",
                    "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"], null, cancellationToken);
            }

            using (await _allocator.LockAsync(cancellationToken))
            {
                index = _allocator.Allocate(sandboxId);
                await IpAsync(["link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns], cancellationToken);
                await IpAsync(["link", "set", hostIf, "alias", HostInterfaces.Alias(sandboxId, index.Value)], cancellationToken);
            }

            var hostAddress = NetworkNames.HostAddress(_options, index.Value);
            var metric = (_options.RouteMetricBase + index.Value).ToString(CultureInfo.InvariantCulture);
            await RunAsync("ip", ["netns", "exec", ns, "nft", "-f", "-"],
                NetworkNames.FirewallRuleset(_options, hostAddress), cancellationToken);

            // Several host interfaces carry a route to the same 10.254.0.2; strict reverse-path filtering
            // would drop replies arriving on any but the lowest-metric one, so this interface uses loose mode.
            await WriteSysctlAsync($"/proc/sys/net/ipv4/conf/{hostIf}/rp_filter", "2", cancellationToken);
            await WriteSysctlAsync($"/proc/sys/net/ipv6/conf/{hostIf}/disable_ipv6", "1", cancellationToken);
            await IpAsync(["addr", "add", hostAddress + "/32", "dev", hostIf], cancellationToken);
            await IpAsync(["link", "set", hostIf, "up"], cancellationToken);

            await IpAsync(["-n", ns, "addr", "add", sandboxAddress + "/32", "dev", "eth0"], cancellationToken);
            await IpAsync(["-n", ns, "link", "set", "lo", "up"], cancellationToken);
            await IpAsync(["-n", ns, "link", "set", "eth0", "up"], cancellationToken);

            await IpAsync(["route", "add", sandboxAddress + "/32", "dev", hostIf, "metric", metric, "src", hostAddress], cancellationToken);
            await IpAsync(["-n", ns, "route", "add", hostAddress + "/32", "dev", "eth0", "src", sandboxAddress], cancellationToken);

            Log.Created(_logger, ns, hostIf, hostAddress, sandboxAddress, index.Value);
            return new SandboxNetwork
            {
                Namespace = ns,
                HostInterface = hostIf,
                HostAddress = hostAddress,
                SandboxAddress = sandboxAddress,
                Index = index.Value,
            };
        }
        catch (Exception ex)
        {
            Log.CreateFailed(_logger, ns, ex);
            try
            {
                await TeardownAsync(ns, hostIf, index, CancellationToken.None);
            }
            catch (Exception cleanup)
            {
                Log.CleanupStepFailed(_logger, ns, "rollback", cleanup);
            }

            _allocator.Release(sandboxId);
            throw;
        }
    }

    /// <inheritdoc />
    public async Task DeleteAsync(SandboxNetwork network, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(network);
        if (!network.Namespace.StartsWith(_options.NamespacePrefix, StringComparison.Ordinal)
            || !network.HostInterface.StartsWith(_options.InterfacePrefix, StringComparison.Ordinal))
        {
            throw new ArgumentException(
                $"Network {network.Namespace}/{network.HostInterface} was not created by this manager.", nameof(network));
        }

        await TeardownAsync(network.Namespace, network.HostInterface, network.Index, cancellationToken);
        var sandboxId = network.Namespace[_options.NamespacePrefix.Length..];
        if (NetworkNames.IsValidSandboxId(sandboxId))
        {
            _allocator.Release(sandboxId);
        }

        Log.Deleted(_logger, network.Namespace);
    }

    /// <inheritdoc />
    public Task<IReadOnlyCollection<string>> FindLeftoversAsync(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var ids = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var ns in HostInterfaces.Namespaces(_options.NamespacePrefix))
        {
            var id = ns[_options.NamespacePrefix.Length..];
            if (NetworkNames.IsValidSandboxId(id))
            {
                ids.Add(id);
            }
        }

        var leased = _allocator.LeasedSandboxes();
        foreach (var (name, alias) in HostInterfaces.List(_options))
        {
            if (HostInterfaces.ParseAlias(alias) is { } parsed)
            {
                ids.Add(parsed.SandboxId);
                continue;
            }

            // No alias yet (crash right after `ip link add`): match the 11-character prefix against leases.
            foreach (var id in leased)
            {
                if (NetworkNames.HostInterface(_options, id) == name)
                {
                    ids.Add(id);
                }
            }
        }

        foreach (var id in leased)
        {
            ids.Add(id);
        }

        return Task.FromResult<IReadOnlyCollection<string>>(ids);
    }

    /// <inheritdoc />
    public async Task DeleteLeftoverAsync(string sandboxId, CancellationToken cancellationToken)
    {
        NetworkNames.ValidateSandboxId(sandboxId);
        var ns = NetworkNames.Namespace(_options, sandboxId);
        await TeardownAsync(ns, NetworkNames.HostInterface(_options, sandboxId), _allocator.Find(sandboxId), cancellationToken);
        _allocator.Release(sandboxId);
        Log.Deleted(_logger, ns);
    }

    /// <inheritdoc />
    /// <exception cref="SandboxConnectException">The sandbox did not accept the connection; the message names it.</exception>
    public Task<Socket> ConnectAsync(SandboxNetwork network, int port, CancellationToken cancellationToken) =>
        SandboxConnector.ConnectAsync(network, port, _options.ConnectTimeout, cancellationToken);

    /// <summary>
    /// Builds one <see cref="SocketsHttpHandler"/> that reaches every sandbox over its own link, for airlockd's
    /// HttpClient and YARP forwarder.
    /// </summary>
    /// <param name="resolveHost">
    /// Maps the request URI's host to a sandbox network, or null when there is no such running sandbox.
    /// Address requests as <c>http://&lt;sandboxId&gt;:49983/…</c>: the host part is the sandbox id.
    /// </param>
    /// <param name="connectTimeout">TCP handshake limit; 5 s when null.</param>
    /// <remarks>
    /// The sandbox is chosen from the URI authority, not from a request option, because the handler pools
    /// connections by authority: every sandbox has the same inside address, so a URI of
    /// <c>http://10.254.0.2:49983</c> would let a pooled connection to one sandbox serve a request for another.
    /// A failed connect surfaces as <see cref="HttpRequestException"/> whose inner exception is a
    /// <see cref="SandboxConnectException"/> naming the sandbox.
    /// </remarks>
    public static SocketsHttpHandler CreateHandler(Func<string, SandboxNetwork?> resolveHost, TimeSpan? connectTimeout = null)
    {
        ArgumentNullException.ThrowIfNull(resolveHost);
        var timeout = connectTimeout ?? TimeSpan.FromSeconds(5);
        return new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            UseCookies = false,
            ConnectTimeout = timeout,
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
            ConnectCallback = async (context, ct) =>
            {
                var host = context.DnsEndPoint.Host;
                var network = resolveHost(host) ?? throw new SandboxConnectException(
                    $"No running sandbox '{host}' to connect to (request {context.InitialRequestMessage.RequestUri}).");
                var socket = await SandboxConnector.ConnectAsync(network, context.DnsEndPoint.Port, timeout, ct);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
    }

    /// <summary>
    /// Checks that this host can create sandbox networks; returns what is missing, empty when ready.
    /// Creates and removes one throwaway namespace (with a veth pair and an nftables table inside it) so
    /// the host's own network is never touched.
    /// </summary>
    public static Task<IReadOnlyList<string>> ProbeAsync(CancellationToken cancellationToken) =>
        NetworkProbe.RunAsync(cancellationToken);

    private async Task TeardownAsync(string ns, string hostIf, int? index, CancellationToken cancellationToken)
    {
        if (HostInterfaces.Exists(hostIf))
        {
            if (index is { } i)
            {
                // Best effort: the route also disappears with the link below.
                await RunAsync("ip", ["route", "del", _options.SandboxAddress + "/32", "dev", hostIf, "metric",
                    (_options.RouteMetricBase + i).ToString(CultureInfo.InvariantCulture)], null, cancellationToken, check: false);
            }

            var result = await RunAsync("ip", ["link", "del", hostIf], null, cancellationToken, check: false);
            if (!result.Succeeded && HostInterfaces.Exists(hostIf))
            {
                throw new NetworkSetupException($"Cannot delete interface {hostIf}: {result.StandardError.Trim()}");
            }
        }

        if (HostInterfaces.NamespaceExists(ns))
        {
            var result = await RunAsync("ip", ["netns", "del", ns], null, cancellationToken, check: false);
            if (!result.Succeeded && HostInterfaces.NamespaceExists(ns))
            {
                throw new NetworkSetupException($"Cannot delete namespace {ns}: {result.StandardError.Trim()}");
            }
        }
    }

    /// <inheritdoc />
    public async Task<string> AttachGuestAsync(SandboxNetwork network, uint tapOwner, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(network);
        var ns = network.Namespace;
        var owner = tapOwner.ToString(CultureInfo.InvariantCulture);
        // The namespace becomes a one-port router: the sandbox address moves to the guest behind tap0, eth0 answers
        // ARP for it (proxy_arp), and the forward chain admits only the host's connections to the agent port.
        await RunAsync("ip", ["netns", "exec", ns, "nft", "-f", "-"],
            NetworkNames.GuestFirewallRuleset(_options, network.HostAddress, GuestTap), cancellationToken);
        await RunAsync("ip", ["netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv4.conf.eth0.proxy_arp=1", "net.ipv4.neigh.eth0.proxy_delay=0"], null, cancellationToken);
        var batch = string.Join('\n',
            $"addr del {network.SandboxAddress}/32 dev eth0",
            $"tuntap add dev {GuestTap} mode tap user {owner} group {owner}",
            // A fixed gateway MAC: a guest restored from a snapshot or resumed from disk keeps a valid ARP entry.
            $"link set {GuestTap} address {GuestGatewayMac}",
            $"addr add {_options.GuestGateway}/24 dev {GuestTap}",
            $"link set {GuestTap} up",
            $"route replace {network.HostAddress}/32 dev eth0 src {_options.GuestGateway}") + "\n";
        await RunAsync("ip", ["-n", ns, "-batch", "-"], batch, cancellationToken);
        return GuestTap;
    }

    /// <summary>The tap device a microVM's network card is attached to, inside the sandbox's namespace.</summary>
    public const string GuestTap = "tap0";

    /// <summary>The MAC address of the namespace's end of the tap (the guest's gateway), the same in every sandbox.</summary>
    public const string GuestGatewayMac = "52:54:00:a1:70:01";

    private Task<ToolResult> IpAsync(IReadOnlyList<string> args, CancellationToken cancellationToken) =>
        RunAsync("ip", args, null, cancellationToken);

    private Task<ToolResult> RunAsync(
        string program, IReadOnlyList<string> args, string? stdin, CancellationToken cancellationToken, bool check = true) =>
        check
            ? Tool.RunCheckedAsync(program, args, stdin, _options.CommandTimeout, cancellationToken)
            : Tool.RunAsync(program, args, stdin, _options.CommandTimeout, cancellationToken);

    private static async Task WriteSysctlAsync(string path, string value, CancellationToken cancellationToken)
    {
        if (File.Exists(path))
        {
            await File.WriteAllTextAsync(path, value, cancellationToken);
        }
    }
}
