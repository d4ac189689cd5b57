using Airlock.Networking;

namespace Airlock.Networking.Tests;

public sealed class NetworkNamesTests
{
    private static readonly NetworkOptions Options = new();

    [Theory]
    [InlineData("")]
    [InlineData("short")]
    [InlineData("ABCDEFGHIJKLMNOPQRST")]
    [InlineData("abcdefghijklmnopqrs;")]
    [InlineData("abcdefghijklmnopqrstu")]
    [InlineData("abc def ghijklmnopqr")]
    public void A_malformed_sandbox_id_is_rejected_with_a_clear_message(string id)
    {
        var ex = Assert.Throws<ArgumentException>(() => NetworkNames.ValidateSandboxId(id));
        Assert.Contains("20 characters of [a-z0-9]", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Names_follow_the_agreed_layout_and_fit_in_IFNAMSIZ()
    {
        const string id = "abcdefghij0123456789";
        Assert.Equal("airlock-abcdefghij0123456789", NetworkNames.Namespace(Options, id));
        Assert.Equal("alkabcdefghij0", NetworkNames.HostInterface(Options, id));
        Assert.True(NetworkNames.HostInterface(Options, id).Length <= 15);
    }

    [Fact]
    public void Host_addresses_are_unique_skip_0_and_255_and_map_back_to_their_index()
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < Options.MaxSandboxes; i++)
        {
            var address = NetworkNames.HostAddress(Options, i);
            Assert.True(seen.Add(address), address);
            Assert.False(address.EndsWith(".0", StringComparison.Ordinal) || address.EndsWith(".255", StringComparison.Ordinal), address);
            Assert.Equal(i, NetworkNames.IndexOf(Options, address));
        }

        Assert.Equal("10.213.0.1", NetworkNames.HostAddress(Options, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => NetworkNames.HostAddress(Options, Options.MaxSandboxes));
        Assert.Throws<ArgumentOutOfRangeException>(() => NetworkNames.HostAddress(Options, -1));
        Assert.Null(NetworkNames.IndexOf(Options, "10.254.0.2"));
    }

    [Fact]
    public void The_firewall_admits_only_the_host_address_to_the_agent_port()
    {
        var rules = NetworkNames.FirewallRuleset(Options, "10.213.0.7");
        Assert.Contains("iifname \"eth0\" ip saddr 10.213.0.7 ip daddr 10.254.0.2 tcp dport 49983", rules, StringComparison.Ordinal);
        Assert.Equal(3, rules.Split("policy drop").Length - 1);
    }
}
