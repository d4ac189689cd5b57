using System.Globalization;
using Airlock.Core.Api;
using Airlock.Testing;
using Airlock.Testing.Reliability;
using Xunit.Abstractions;

namespace Airlock.IntegrationTests.Reliability;

/// <summary>
/// The short CI version of the pause/resume soak (bench/reliability/soak.sh runs 100 cycles per boundary): files
/// written between cycles, every checksum compared after every resume (e2b-dev/E2B#884 lost files from the second).
/// </summary>
[Collection("airlockd")]
[Trait("Category", "Integration")]
[Trait("Category", "Reliability")]
public sealed class PauseResumeSoakTests(HostFixture fixture, ITestOutputHelper output) : IClassFixture<HostFixture>
{
    /// <summary>Cycles per test: AIRLOCK_SOAK_CYCLES, else the CI default (a TCG microVM cycle takes 5-25 s on a busy 2-core host).</summary>
    private static int Cycles(int ciDefault) =>
        int.TryParse(Environment.GetEnvironmentVariable("AIRLOCK_SOAK_CYCLES"), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : ciDefault;

    private async Task SoakAsync(NewSandboxRequest request, int cycleCount, Func<int, PauseRequest?> pause)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(100 + (cycleCount * 40)));
        var sandbox = await fixture.Host.CreateSandboxAsync(request, cts.Token);
        try
        {
            var cycles = await SoakDriver.RunAsync(fixture.Host, sandbox, cycleCount, pause, c => output.WriteLine(
                string.Create(CultureInfo.InvariantCulture, $"cycle {c.Cycle} ({c.PauseMode}): pause {c.PauseMs:F0} ms, resume {c.ResumeMs:F0} ms, {c.Files} files verified in {c.VerifyMs:F0} ms")), cts.Token);
            Assert.Equal(cycleCount, cycles.Count);
        }
        finally
        {
            await fixture.Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
        }

        Assert.Empty(Leftovers.Find([sandbox.SandboxId], fixture.Host.DataDir));
    }

    [Fact(Timeout = 300_000)]
    public Task A_microvm_keeps_every_file_byte_for_byte_through_every_pause_and_resume() =>
        SoakAsync(new NewSandboxRequest { TemplateId = "base", Risk = "high", Timeout = 3600 }, Cycles(3), _ => null);

    [Fact(Timeout = 300_000)]
    public Task A_container_keeps_every_file_byte_for_byte_through_frozen_and_to_disk_pauses() =>
        SoakAsync(new NewSandboxRequest { TemplateId = "base", Risk = "medium", Timeout = 3600 }, Cycles(6), cycle => cycle % 2 == 0 ? null : new PauseRequest { Memory = false });
}
