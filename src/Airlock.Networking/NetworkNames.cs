using System.Globalization;
using System.Net;

namespace Airlock.Networking;

/// <summary>Pure naming and addressing rules for a sandbox's network; no I/O.</summary>
public static class NetworkNames
{
    /// <summary>Sandbox ids are exactly 20 characters of [a-z0-9].</summary>
    public static bool IsValidSandboxId(string? sandboxId) =>
        sandboxId is { Length: 20 } && sandboxId.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9'));

    /// <summary>Throws a clear <see cref="ArgumentException"/> when <paramref name="sandboxId"/> is not a sandbox id.</summary>
    public static void ValidateSandboxId(string? sandboxId)
    {
        if (!IsValidSandboxId(sandboxId))
        {
            throw new ArgumentException(
                $"'{sandboxId}' is not a sandbox id: expected exactly 20 characters of [a-z0-9].", nameof(sandboxId));
        }
    }

    public static string Namespace(NetworkOptions options, string sandboxId) => options.NamespacePrefix + sandboxId;

    /// <summary>Host interface name: prefix + the first 11 characters of the id (at most 15 characters, IFNAMSIZ-1).</summary>
    public static string HostInterface(NetworkOptions options, string sandboxId) =>
        options.InterfacePrefix + sandboxId[..Math.Min(11, sandboxId.Length)];

    /// <summary>Host address for an allocation index; the last octet skips .0 and .255.</summary>
    public static string HostAddress(NetworkOptions options, int index)
    {
        if (index < 0 || index >= options.MaxSandboxes || index / 254 > 255)
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, "Sandbox network index is out of range.");
        }

        return string.Create(CultureInfo.InvariantCulture, $"{options.HostPrefix}.{index / 254}.{index % 254 + 1}");
    }

    /// <summary>Reverse of <see cref="HostAddress"/>; null when the address is not one of ours.</summary>
    public static int? IndexOf(NetworkOptions options, string address)
    {
        if (!address.StartsWith(options.HostPrefix + ".", StringComparison.Ordinal) || !IPAddress.TryParse(address, out var ip))
        {
            return null;
        }

        var bytes = ip.GetAddressBytes();
        if (bytes.Length != 4 || bytes[3] is 0 or 255)
        {
            return null;
        }

        return bytes[2] * 254 + bytes[3] - 1;
    }

    /// <summary>The nftables ruleset applied inside a sandbox namespace, in one atomic <c>nft -f</c>.</summary>
    /// <remarks>The add+delete prefix replaces an existing table, so applying twice is harmless.</remarks>
    public static string FirewallRuleset(NetworkOptions options, string hostAddress) => string.Create(
        CultureInfo.InvariantCulture,
        $$"""
        add table inet airlock
        delete table inet airlock
        table inet airlock {
            chain input {
                type filter hook input priority 0; policy drop;
                iif "lo" accept
                ct state established,related accept
                iifname "eth0" ip saddr {{hostAddress}} ip daddr {{options.SandboxAddress}} tcp dport {{options.AgentPort}} ct state new accept
            }
            chain forward {
                type filter hook forward priority 0; policy drop;
            }
            chain output {
                type filter hook output priority 0; policy drop;
                oif "lo" accept
                ct state established,related accept
            }
        }

        """);

    /// <summary>
    /// The ruleset of a namespace that routes for a microVM guest behind <paramref name="tap"/>: nothing may enter or
    /// leave the namespace itself, and the only forwarded connection is the host's to the agent port on the guest.
    /// </summary>
    public static string GuestFirewallRuleset(NetworkOptions options, string hostAddress, string tap) => string.Create(
        CultureInfo.InvariantCulture,
        $$"""
        add table inet airlock
        delete table inet airlock
        table inet airlock {
            chain input {
                type filter hook input priority 0; policy drop;
                iif "lo" accept
            }
            chain forward {
                type filter hook forward priority 0; policy drop;
                ct state established,related accept
                iifname "eth0" oifname "{{tap}}" ip saddr {{hostAddress}} ip daddr {{options.SandboxAddress}} tcp dport {{options.AgentPort}} ct state new accept
            }
            chain output {
                type filter hook output priority 0; policy drop;
                oif "lo" accept
            }
        }

        """);
}
