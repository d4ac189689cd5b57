using System.Security.Cryptography;

namespace Airlock.Networking.Internal;

/// <summary>Doctor checks for per-sandbox networking, run inside a throwaway namespace.</summary>
internal static class NetworkProbe
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    public static async Task<IReadOnlyList<string>> RunAsync(CancellationToken cancellationToken)
    {
        var missing = new List<string>();
        if (!OperatingSystem.IsLinux())
        {
            return ["Sandbox networking needs Linux network namespaces; this is not Linux."];
        }

        if (!Environment.IsPrivilegedProcess)
        {
            missing.Add("Sandbox networking needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create namespaces and veth pairs.");
        }

        var ip = await TryAsync("ip", ["-V"], cancellationToken);
        if (ip is null)
        {
            missing.Add("'ip' (iproute2) is not installed or not on PATH: apt-get install iproute2.");
        }

        var nft = await TryAsync("nft", ["-v"], cancellationToken);
        if (nft is null)
        {
            missing.Add("'nft' (nftables) is not installed or not on PATH: apt-get install nftables.");
        }

        if (!File.Exists("/proc/self/ns/net"))
        {
            missing.Add("The kernel has no network namespace support (/proc/self/ns/net is missing).");
        }

        if (missing.Count > 0 || ip is null)
        {
            return missing;
        }

        // Not "airlock-…": leftover scanners must never mistake the probe for a sandbox.
        var ns = "alprobe-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        var add = await TryAsync("ip", ["netns", "add", ns], cancellationToken);
        if (add is not { Succeeded: true })
        {
            missing.Add($"Cannot create a network namespace ('ip netns add' failed: {add?.StandardError.Trim()}).");
            return missing;
        }

        try
        {
            var veth = await TryAsync("ip", ["-n", ns, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"], cancellationToken);
            if (veth is not { Succeeded: true })
            {
                missing.Add($"Cannot create a veth pair (kernel module veth?): {veth?.StandardError.Trim()}");
            }

            if (nft is not null)
            {
                const string Ruleset = """
                    table inet airlock_probe {
                        chain input { type filter hook input priority 0; policy drop; ct state established,related accept; }
                    }

                    """;
                var rules = await TryAsync("ip", ["netns", "exec", ns, "nft", "-f", "-"], cancellationToken, Ruleset);
                if (rules is not { Succeeded: true })
                {
                    missing.Add($"Cannot load an nftables inet table with conntrack inside a namespace: {rules?.StandardError.Trim()}");
                }
            }
        }
        finally
        {
            await TryAsync("ip", ["netns", "del", ns], CancellationToken.None);
        }

        return missing;
    }

    private static async Task<ToolResult?> TryAsync(
        string program, IReadOnlyList<string> args, CancellationToken cancellationToken, string? stdin = null)
    {
        try
        {
            return await Tool.RunAsync(program, args, stdin, Timeout, cancellationToken);
        }
        catch (InvalidOperationException)
        {
            return null;
        }
        catch (TimeoutException)
        {
            return null;
        }
    }
}
