using System.Net.Sockets;
using System.Text;
using Airlock.Core.Sandboxes;

namespace Airlock.Networking.Tests;

[Trait("Category", "Integration")]
public sealed class NetnsNetworkManagerTests
{
    private const string Agent = "10.254.0.2";

    [Fact(Timeout = 60_000)]
    public async Task Two_sandboxes_created_concurrently_get_distinct_host_addresses_and_the_same_sandbox_address()
    {
        await using var net = new TestNet();
        var ct = TestContext.Current();
        var a = net.CreateAsync(TestNet.NewSandboxId(), ct);
        var b = net.CreateAsync(TestNet.NewSandboxId(), ct);
        var (na, nb) = (await a, await b);

        Assert.NotEqual(na.HostAddress, nb.HostAddress);
        Assert.NotEqual(na.Index, nb.Index);
        Assert.NotEqual(na.HostInterface, nb.HostInterface);
        Assert.Equal(Agent, na.SandboxAddress);
        Assert.Equal(Agent, nb.SandboxAddress);
        foreach (var n in new[] { na, nb })
        {
            Assert.True(TestNet.NamespaceExists(n.Namespace));
            Assert.True(TestNet.InterfaceExists(n.HostInterface));
            var inside = await TestNet.RunAsync("ip", "-n", n.Namespace, "-4", "addr", "show", "dev", "eth0");
            Assert.Contains("10.254.0.2/32", inside, StringComparison.Ordinal);
            var routes = await TestNet.RunAsync("ip", "-n", n.Namespace, "route", "show");
            Assert.DoesNotContain("default", routes, StringComparison.Ordinal);
            Assert.Contains($"{n.HostAddress} dev eth0", routes, StringComparison.Ordinal);
            var v6 = await TestNet.RunAsync("ip", "netns", "exec", n.Namespace, "cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6");
            Assert.Equal("1", v6.Trim());
        }
    }

    [Fact(Timeout = 90_000)]
    public async Task Two_managers_with_different_state_directories_never_hand_out_the_same_address()
    {
        await using var net = new TestNet();
        await using var other = new TestNet(Path.Combine(Path.GetTempPath(), "airlock-nettests-other-" + Environment.ProcessId));
        var ct = TestContext.Current();
        var creates = Enumerable.Range(0, 6)
            .Select(i => i % 2 == 0 ? net.CreateAsync(TestNet.NewSandboxId(), ct) : other.CreateAsync(TestNet.NewSandboxId(), ct))
            .ToArray();
        var networks = await Task.WhenAll(creates);
        Assert.Equal(6, networks.Select(n => n.HostAddress).Distinct(StringComparer.Ordinal).Count());
    }

    [Fact(Timeout = 60_000)]
    public async Task Each_sandbox_answers_only_through_its_own_link()
    {
        await using var net = new TestNet();
        var ct = TestContext.Current();
        var na = await net.CreateAsync(TestNet.NewSandboxId(), ct);
        var nb = await net.CreateAsync(TestNet.NewSandboxId(), ct);
        await net.StartTcpServerAsync(na.Namespace, Agent, 49983, "hello from A");
        await net.StartTcpServerAsync(nb.Namespace, Agent, 49983, "hello from B");

        for (var i = 0; i < 3; i++)
        {
            Assert.Equal("hello from A", await ReadAllAsync(await net.Manager.ConnectAsync(na, 49983, ct), ct));
            Assert.Equal("hello from B", await ReadAllAsync(await net.Manager.ConnectAsync(nb, 49983, ct), ct));
        }

        // A third sandbox with nothing listening refuses, although A and B listen on the same address and port.
        var nc = await net.CreateAsync(TestNet.NewSandboxId(), ct);
        var ex = await Assert.ThrowsAsync<SandboxConnectException>(() => net.Manager.ConnectAsync(nc, 49983, ct));
        Assert.Contains(nc.Namespace, ex.Message, StringComparison.Ordinal);
        Assert.Contains("ConnectionRefused", ex.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task One_http_handler_routes_requests_to_each_sandbox_by_host_name()
    {
        await using var net = new TestNet();
        var ct = TestContext.Current();
        var ida = TestNet.NewSandboxId();
        var idb = TestNet.NewSandboxId();
        var na = await net.CreateAsync(ida, ct);
        var nb = await net.CreateAsync(idb, ct);
        const string http = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n";
        await net.StartTcpServerAsync(na.Namespace, Agent, 49983, http + "A");
        await net.StartTcpServerAsync(nb.Namespace, Agent, 49983, http + "B");

        var networks = new Dictionary<string, SandboxNetwork> { [ida] = na, [idb] = nb };
        using var client = new HttpClient(NetnsNetworkManager.CreateHandler(h => networks.GetValueOrDefault(h)));
        Assert.Equal("A", await client.GetStringAsync(new Uri($"http://{ida}:49983/"), ct));
        Assert.Equal("B", await client.GetStringAsync(new Uri($"http://{idb}:49983/"), ct));
        var missing = await Assert.ThrowsAsync<HttpRequestException>(
            () => client.GetStringAsync(new Uri("http://nosuchsandbox0000000:49983/"), ct));
        Assert.Contains("nosuchsandbox0000000", missing.ToString(), StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_port_other_than_the_agent_port_is_unreachable_from_the_host()
    {
        await using var net = new TestNet();
        var ct = TestContext.Current();
        var n = await net.CreateAsync(TestNet.NewSandboxId(), ct);
        await net.StartTcpServerAsync(n.Namespace, Agent, 49983, "agent");
        await net.StartTcpServerAsync(n.Namespace, Agent, 8080, "other");

        Assert.Equal("agent", await ReadAllAsync(await net.Manager.ConnectAsync(n, 49983, ct), ct));
        var ex = await Assert.ThrowsAsync<SandboxConnectException>(() => net.Manager.ConnectAsync(n, 8080, ct));
        Assert.Contains(n.Namespace, ex.Message, StringComparison.Ordinal);

        // The same port answers once the firewall is gone, so the refusal above was the firewall's doing.
        await TestNet.RunAsync("ip", "netns", "exec", n.Namespace, "nft", "delete", "table", "inet", "airlock");
        Assert.Equal("other", await ReadAllAsync(await net.Manager.ConnectAsync(n, 8080, ct), ct));
    }

    [Fact(Timeout = 90_000)]
    public async Task Nothing_gets_out_of_a_sandbox_namespace_until_its_firewall_is_removed()
    {
        await using var net = new TestNet();
        var ct = TestContext.Current();
        var n = await net.CreateAsync(TestNet.NewSandboxId(), ct);

        // Our own peer namespace, linked straight to the sandbox namespace by an extra veth.
        var peer = "altest-peer-" + Guid.NewGuid().ToString("N")[..8];
        net.TrackNamespace(peer);
        await TestNet.RunAsync("ip", "netns", "add", peer);
        await TestNet.RunAsync("ip", "-n", n.Namespace, "link", "add", "xpeer0", "type", "veth", "peer", "name", "xpeer1", "netns", peer);
        await TestNet.RunAsync("ip", "-n", n.Namespace, "addr", "add", "10.254.99.2/24", "dev", "xpeer0");
        await TestNet.RunAsync("ip", "-n", n.Namespace, "link", "set", "xpeer0", "up");
        await TestNet.RunAsync("ip", "-n", peer, "addr", "add", "10.254.99.1/24", "dev", "xpeer1");
        await TestNet.RunAsync("ip", "-n", peer, "link", "set", "xpeer1", "up");
        await TestNet.RunAsync("ip", "-n", peer, "link", "set", "lo", "up");
        await net.StartTcpServerAsync(peer, "10.254.99.1", 8080, "peer");
        await net.StartUdpEchoAsync(peer, "10.254.99.1", 8081);

        Assert.Equal("tcp=fail udp=fail icmp=fail", await ProbeOutAsync(net, n.Namespace, ct));

        await TestNet.RunAsync("ip", "netns", "exec", n.Namespace, "nft", "delete", "table", "inet", "airlock");
        Assert.Equal("tcp=ok udp=ok icmp=ok", await ProbeOutAsync(net, n.Namespace, ct));
    }

    [Fact(Timeout = 60_000)]
    public async Task Delete_leaves_no_namespace_interface_or_route_and_tolerates_a_second_delete()
    {
        await using var net = new TestNet();
        var ct = TestContext.Current();
        var n = await net.CreateAsync(TestNet.NewSandboxId(), ct);
        Assert.Contains(n.HostInterface, await TestNet.HostRoutesAsync(), StringComparison.Ordinal);

        await net.Manager.DeleteAsync(n, ct);
        Assert.False(TestNet.NamespaceExists(n.Namespace));
        Assert.False(TestNet.InterfaceExists(n.HostInterface));
        var routes = await TestNet.HostRoutesAsync();
        Assert.DoesNotContain(n.HostInterface, routes, StringComparison.Ordinal);
        Assert.DoesNotContain(n.HostAddress + " ", routes, StringComparison.Ordinal);

        await net.Manager.DeleteAsync(n, ct);
        await Assert.ThrowsAsync<SandboxConnectException>(() => net.Manager.ConnectAsync(n, 49983, ct));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_leftover_of_a_crashed_create_is_found_and_removed()
    {
        await using var net = new TestNet();
        var ct = TestContext.Current();
        var id = TestNet.NewSandboxId();
        var crashedNs = "airlock-" + id;
        net.TrackNamespace(crashedNs);
        // What a create that died after its first step leaves behind.
        await TestNet.RunAsync("ip", "netns", "add", crashedNs);
        var full = await net.CreateAsync(TestNet.NewSandboxId(), ct);

        var leftovers = await net.Manager.FindLeftoversAsync(ct);
        Assert.Contains(id, leftovers);
        Assert.Contains(full.Namespace["airlock-".Length..], leftovers);

        await net.Manager.DeleteLeftoverAsync(id, ct);
        await net.Manager.DeleteLeftoverAsync(full.Namespace["airlock-".Length..], ct);
        Assert.False(TestNet.NamespaceExists(crashedNs));
        Assert.False(TestNet.NamespaceExists(full.Namespace));
        Assert.False(TestNet.InterfaceExists(full.HostInterface));
        var after = await net.Manager.FindLeftoversAsync(ct);
        Assert.DoesNotContain(id, after);
        Assert.DoesNotContain(full.Namespace["airlock-".Length..], after);
    }

    [Fact(Timeout = 60_000)]
    public async Task Creating_again_after_a_partial_create_gives_a_working_network()
    {
        await using var net = new TestNet();
        var ct = TestContext.Current();
        var id = TestNet.NewSandboxId();
        net.TrackNamespace("airlock-" + id);
        await TestNet.RunAsync("ip", "netns", "add", "airlock-" + id);

        var n = await net.CreateAsync(id, ct);
        var again = await net.CreateAsync(id, ct);
        Assert.Equal(n, again);
        await net.StartTcpServerAsync(n.Namespace, Agent, 49983, "retried");
        Assert.Equal("retried", await ReadAllAsync(await net.Manager.ConnectAsync(again, 49983, ct), ct));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_create_that_fails_at_its_last_step_rolls_everything_back()
    {
        await using var net = new TestNet();
        var ct = TestContext.Current();
        // A negative metric makes the real `ip route add` fail after namespace, veth, firewall and addresses exist.
        var broken = new NetnsNetworkManager(net.Options with { RouteMetricBase = -100_000 },
            Microsoft.Extensions.Logging.Abstractions.NullLogger<NetnsNetworkManager>.Instance);
        var id = TestNet.NewSandboxId();
        net.TrackNamespace("airlock-" + id);

        var ex = await Assert.ThrowsAsync<NetworkSetupException>(() => broken.CreateAsync(id, NetworkPolicy.DenyAll, ct));
        Assert.Contains("route", ex.Message, StringComparison.Ordinal);
        Assert.False(TestNet.NamespaceExists("airlock-" + id));
        Assert.False(TestNet.InterfaceExists(NetworkNames.HostInterface(net.Options, id)));
        Assert.DoesNotContain(id, await net.Manager.FindLeftoversAsync(ct));

        // The same id then creates cleanly.
        var n = await net.CreateAsync(id, ct);
        Assert.True(TestNet.NamespaceExists(n.Namespace));
    }

    [Fact(Timeout = 30_000)]
    public async Task Options_that_cannot_work_are_refused_at_construction()
    {
        await using var net = new TestNet();
        var log = Microsoft.Extensions.Logging.Abstractions.NullLogger<NetnsNetworkManager>.Instance;
        Assert.Contains("HostPrefix", Assert.Throws<ArgumentException>(
            () => new NetnsNetworkManager(net.Options with { HostPrefix = "10.213.1" }, log)).Message, StringComparison.Ordinal);
        Assert.Contains("AgentPort", Assert.Throws<ArgumentException>(
            () => new NetnsNetworkManager(net.Options with { AgentPort = 70000 }, log)).Message, StringComparison.Ordinal);
        Assert.Contains("SandboxAddress", Assert.Throws<ArgumentException>(
            () => new NetnsNetworkManager(net.Options with { SandboxAddress = "::1" }, log)).Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_policy_other_than_deny_all_is_refused_and_leaves_nothing_behind()
    {
        await using var net = new TestNet();
        var ct = TestContext.Current();
        var id = TestNet.NewSandboxId();
        net.TrackNamespace("airlock-" + id);
        NetworkPolicy[] unenforceable =
        [
            new() { Allow = [new EgressRule("pypi.org") { Ports = [443] }] },
            new() { Default = EgressDefault.Allow },
            new() { Default = EgressDefault.Allow, Deny = [new EgressRule("10.0.0.0/8")] },
        ];

        foreach (var policy in unenforceable)
        {
            var ex = await Assert.ThrowsAsync<NotSupportedException>(() => net.Manager.CreateAsync(id, policy, ct));
            Assert.Contains("deny-all", ex.Message, StringComparison.Ordinal);
            Assert.False(TestNet.NamespaceExists("airlock-" + id));
            Assert.False(TestNet.InterfaceExists(NetworkNames.HostInterface(net.Options, id)));
            Assert.DoesNotContain(id, await net.Manager.FindLeftoversAsync(ct));
        }

        // A running sandbox's network refuses the same policies and keeps its deny-all firewall.
        var n = await net.CreateAsync(id, ct);
        var rulesBefore = await RulesetAsync(n.Namespace, ct);
        foreach (var policy in unenforceable)
        {
            await Assert.ThrowsAsync<NotSupportedException>(() => net.Manager.ApplyPolicyAsync(n, policy, ct));
        }

        await net.Manager.ApplyPolicyAsync(n, NetworkPolicy.DenyAll, ct);
        Assert.Equal(rulesBefore, await RulesetAsync(n.Namespace, ct));
        Assert.Contains("policy drop", rulesBefore, StringComparison.Ordinal);
    }

    private static async Task<string> RulesetAsync(string ns, CancellationToken ct)
    {
        var result = await CliWrap.Buffered.BufferedCommandExtensions.ExecuteBufferedAsync(
            CliWrap.Cli.Wrap("ip").WithArguments(["netns", "exec", ns, "nft", "list", "ruleset"]), ct);
        return result.StandardOutput;
    }

    [Fact(Timeout = 30_000)]
    public async Task A_bad_sandbox_id_is_refused_before_anything_is_created()
    {
        await using var net = new TestNet();
        var ex = await Assert.ThrowsAsync<ArgumentException>(() => net.Manager.CreateAsync("../../etc", NetworkPolicy.DenyAll, TestContext.Current()));
        Assert.Contains("not a sandbox id", ex.Message, StringComparison.Ordinal);
        Assert.False(TestNet.NamespaceExists("airlock-../../etc"));
    }

    [Fact(Timeout = 60_000)]
    public async Task The_probe_reports_nothing_missing_on_a_host_with_ip_nft_and_netns()
    {
        var missing = await NetnsNetworkManager.ProbeAsync(TestContext.Current());
        Assert.Empty(missing);
        Assert.Empty(Directory.EnumerateFiles("/run/netns", "alprobe-*"));
    }

    private static async Task<string> ReadAllAsync(Socket socket, CancellationToken ct)
    {
        using var stream = new NetworkStream(socket, ownsSocket: true);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(TimeSpan.FromSeconds(10));
        return await reader.ReadToEndAsync(cts.Token);
    }

    /// <summary>From inside <paramref name="ns"/>, tries TCP, UDP and ICMP to the peer at 10.254.99.1 (2 s each).</summary>
    private static Task<string> ProbeOutAsync(TestNet net, string ns, CancellationToken ct) => net.RunPythonAsync(ns, """
        import socket, struct, os
        def tcp():
            s = socket.socket(); s.settimeout(2)
            try:
                s.connect(("10.254.99.1", 8080)); return s.recv(16) == b"peer"
            except OSError: return False
            finally: s.close()
        def udp():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
            try:
                s.sendto(b"ping", ("10.254.99.1", 8081)); return s.recvfrom(16)[0] == b"ping"
            except OSError: return False
            finally: s.close()
        def icmp():
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(2)
            try:
                hdr = struct.pack("!BBHHH", 8, 0, 0, os.getpid() & 0xffff, 1) + b"airlock"
                c = 0
                for i in range(0, len(hdr), 2):
                    w = hdr[i] << 8 | (hdr[i+1] if i + 1 < len(hdr) else 0); c += w
                c = (c >> 16) + (c & 0xffff); c = ~(c + (c >> 16)) & 0xffff
                pkt = hdr[:2] + struct.pack("!H", c) + hdr[4:]
                s.sendto(pkt, ("10.254.99.1", 0))
                while True:
                    d, a = s.recvfrom(1024)
                    if a[0] == "10.254.99.1" and d[20] == 0: return True
            except OSError: return False
            finally: s.close()
        r = lambda ok: "ok" if ok else "fail"
        print(f"tcp={r(tcp())} udp={r(udp())} icmp={r(icmp())}")
        """, ct);
}

internal static class TestContext
{
    /// <summary>xunit 2 has no ambient test token; tests bound themselves with [Fact(Timeout)] and this cap.</summary>
    public static CancellationToken Current() => new CancellationTokenSource(TimeSpan.FromSeconds(120)).Token;
}

[Trait("Category", "Integration")]
public sealed class GuestAttachTests
{
    [Fact(Timeout = 60_000)]
    public async Task Attaching_a_guest_moves_the_address_behind_a_tap_the_sandbox_uid_owns_and_forwards_only_the_agent_port()
    {
        await using var net = new TestNet();
        var ct = TestContext.Current();
        var n = await net.CreateAsync(TestNet.NewSandboxId(), ct);
        var tap = await net.Manager.AttachGuestAsync(n, 200_123, ct);

        Assert.Equal(NetnsNetworkManager.GuestTap, tap);
        var eth0 = await TestNet.RunAsync("ip", "-n", n.Namespace, "-4", "addr", "show", "dev", "eth0");
        Assert.DoesNotContain("10.254.0.2", eth0, StringComparison.Ordinal);
        var link = await TestNet.RunAsync("ip", "-n", n.Namespace, "-d", "link", "show", "dev", tap);
        Assert.Contains(NetnsNetworkManager.GuestGatewayMac, link, StringComparison.Ordinal);
        Assert.Contains("user 200123", link, StringComparison.Ordinal);
        var addr = await TestNet.RunAsync("ip", "-n", n.Namespace, "-4", "addr", "show", "dev", tap);
        Assert.Contains("10.254.0.1/24", addr, StringComparison.Ordinal);
        var rules = await TestNet.RunAsync("ip", "netns", "exec", n.Namespace, "nft", "list", "table", "inet", "airlock");
        Assert.Contains($"iifname \"eth0\" oifname \"{tap}\" ip saddr {n.HostAddress} ip daddr 10.254.0.2 tcp dport 49983 ct state new accept", rules, StringComparison.Ordinal);
        Assert.Equal(3, rules.Split("policy drop").Length - 1);
        Assert.Equal("1", (await TestNet.RunAsync("ip", "netns", "exec", n.Namespace, "cat", "/proc/sys/net/ipv4/conf/eth0/proxy_arp")).Trim());
    }
}
