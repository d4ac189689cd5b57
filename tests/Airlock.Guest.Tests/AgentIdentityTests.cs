using Airlock.Envd.Client;
using Airlock.Envd.Protocol.Agent;

namespace Airlock.Guest.Tests;

/// <summary>
/// SetIdentity against a real agent. Only the token and the environment are exercised here: the agent runs on the test
/// host, where setting the clock, hostname or machine-id would change the host (the microVM tests cover those).
/// </summary>
public sealed class AgentIdentityTests(AgentFixture agent) : IClassFixture<AgentFixture>
{
    [Fact]
    public async Task SetIdentity_swaps_the_token_and_the_environment_and_the_old_token_stops_working()
    {
        var newToken = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
        var request = new SetIdentityRequest { AccessToken = newToken, ReplaceEnvs = true };
        request.Envs["IDENTITY_ENV"] = "after";
        var kernel = await agent.Client(binary: true).SetIdentityAsync(request, CancellationToken.None);
        Assert.Equal((await File.ReadAllTextAsync("/proc/sys/kernel/osrelease")).Trim(), kernel);

        var old = await Assert.ThrowsAsync<EnvdException>(() => agent.Client().ListAsync(CancellationToken.None));
        Assert.Equal("unauthenticated", old.Code);

        var output = new System.Text.StringBuilder();
        await foreach (var e in agent.Client(token: newToken).StartAsync(new ProcessSpec { Command = "/bin/sh", Args = ["-c", "echo ${IDENTITY_ENV:-unset} ${AIRLOCK_SHOULD_NOT_LEAK:-gone}"] }, CancellationToken.None))
        {
            if (e is ProcessStdout o)
            {
                output.Append(System.Text.Encoding.UTF8.GetString(o.Data.Span));
            }
        }

        Assert.Equal("after gone\n", output.ToString());

        // And back, so the other test in this class meets the fixture's token.
        await agent.Client(token: newToken).SetIdentityAsync(new SetIdentityRequest { AccessToken = agent.Token }, CancellationToken.None);
        await agent.Client().ListAsync(CancellationToken.None);
    }

    [Theory]
    [InlineData("short", "")]
    [InlineData("0123456789abcdef0123", "not-hex")]
    public async Task SetIdentity_rejects_a_short_token_or_a_malformed_machine_id_and_changes_nothing(string token, string machineId)
    {
        var e = await Assert.ThrowsAsync<EnvdException>(() => agent.Client().SetIdentityAsync(new SetIdentityRequest { AccessToken = token, MachineId = machineId }, CancellationToken.None));
        Assert.Equal("invalid_argument", e.Code);
        await agent.Client().ListAsync(CancellationToken.None); // the token still works: nothing was swapped
    }
}
