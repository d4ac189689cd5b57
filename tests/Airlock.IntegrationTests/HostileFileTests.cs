using System.Diagnostics;
using System.Net.Http.Json;
using Airlock.Core.Api;
using Airlock.Envd.Client;
using Airlock.Testing;

namespace Airlock.IntegrationTests;

/// <summary>Sandbox code planting special files where an orchestrator reads its output (issue 12, finding 1).</summary>
[Collection("airlockd")]
[Trait("Category", "Integration")]
public sealed class HostileFileTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    private AirlockHost Host => fixture.Host;

    [Fact(Timeout = 120_000)]
    public async Task A_FIFO_read_a_hundred_times_through_the_gateway_leaves_the_sandbox_running_and_answering()
    {
        var sandbox = await Host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Risk = "low", Timeout = 120 });
        try
        {
            var (exit, _, stderr) = await Host.RunAsync(sandbox, "mkfifo /home/user/out.txt");
            Assert.True(exit == 0, stderr);

            // An orchestrator polling the output file and giving up after a second each time: 100 reads, 4 at once (the
            // gateway's default per-sandbox transfer limit, so they reach the agent; one that races a slot still held gets 429).
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
            var envd = Host.Envd(sandbox, http);
            var refused = 0;
            var abandoned = 0;
            var limited = 0;
            for (var round = 0; round < 25; round++)
            {
                await Task.WhenAll(Enumerable.Range(0, 4).Select(async _ =>
                {
                    using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(1));
                    try
                    {
                        await using var body = await envd.ReadFileAsync("/home/user/out.txt", timeout.Token);
                    }
                    catch (EnvdException e) when (e.HttpStatus == 400)
                    {
                        Interlocked.Increment(ref refused);
                    }
                    catch (EnvdException e) when (e.HttpStatus == 429)
                    {
                        Interlocked.Increment(ref limited);
                    }
                    catch (OperationCanceledException)
                    {
                        Interlocked.Increment(ref abandoned);
                    }
                }));
            }

            var clock = Stopwatch.StartNew();
            using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15)))
            {
                var (code, stdout, _) = await Host.RunAsync(sandbox, "echo alive; test -p /home/user/out.txt && echo fifo", timeout.Token);
                Assert.Equal((0, "alive\nfifo\n"), (code, stdout));
            }

            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"the command took {clock.Elapsed}");
            var detail = await Host.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail);
            Assert.Equal("running", detail!.State);
            Assert.True(abandoned == 0 && refused + limited == 100 && refused >= 50, $"{refused} refused, {limited} limited, {abandoned} abandoned");
        }
        finally
        {
            await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
        }
    }
}
