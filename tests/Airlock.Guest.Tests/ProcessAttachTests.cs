using System.Net;
using System.Threading.Channels;
using System.Net.Http.Headers;
using Airlock.Envd;
using Airlock.Envd.Client;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Process;
using Google.Protobuf;
using static Airlock.Guest.Tests.PtySessionTests;

namespace Airlock.Guest.Tests;

/// <summary>Re-attaching to processes (Connect, List) and client-streamed input (StreamInput).</summary>
[Trait("Category", "Integration")]
public sealed class ProcessAttachTests(AgentFixture agent) : IClassFixture<AgentFixture>
{
    private static StartRequest Command(string script, string? tag = null, bool stdin = false)
    {
        var request = new StartRequest { Process = new ProcessConfig { Cmd = "/bin/bash", Args = { "-c", script } }, Stdin = stdin };
        if (tag is not null)
        {
            request.Tag = tag;
        }

        return request;
    }

    /// <summary>Starts a command and ends its Start stream right after the start event, as a client that goes away.</summary>
    private async Task<uint> StartDetachedAsync(StartRequest request, CancellationToken cancellationToken)
    {
        await foreach (var response in new RawConnect(agent).StreamAsync("process.Process/Start", request, StartResponse.Parser, cancellationToken))
        {
            return response.Event.Start.Pid;
        }

        throw new InvalidOperationException("no start event");
    }

    private Task KillAsync(uint pid, CancellationToken cancellationToken) =>
        new RawConnect(agent).UnaryAsync("process.Process/SendSignal", new SendSignalRequest { Process = ByPid(pid), Signal = Signal.Sigkill }, SendSignalResponse.Parser, cancellationToken);

    [Fact(Timeout = 60_000)]
    public async Task Connect_reattaches_to_a_pty_session_by_pid_and_by_tag_after_its_start_stream_ended()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var connect = new RawConnect(agent);
        var request = Pty("cat");
        request.Tag = "term-" + Guid.NewGuid().ToString("N")[..6];
        var pid = await StartDetachedAsync(request, timeout.Token);
        foreach (var selector in new[] { ByPid(pid), new ProcessSelector { Tag = request.Tag } })
        {
            using var attached = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token);
            var seen = new System.Text.StringBuilder();
            var word = "again-" + selector.SelectorCase;
            await foreach (var response in connect.StreamAsync("process.Process/Connect", new ConnectRequest { Process = selector }, ConnectResponse.Parser, attached.Token))
            {
                if (response.Event.EventCase == ProcessEvent.EventOneofCase.Start)
                {
                    Assert.Equal(pid, response.Event.Start.Pid);
                    await connect.UnaryAsync("process.Process/SendInput", new SendInputRequest { Process = ByPid(pid), Input = new ProcessInput { Pty = ByteString.CopyFromUtf8(word + "\n") } }, SendInputResponse.Parser, timeout.Token);
                }
                else if (response.Event.EventCase == ProcessEvent.EventOneofCase.Data)
                {
                    Assert.Equal(ProcessEvent.Types.DataEvent.OutputOneofCase.Pty, response.Event.Data.OutputCase);
                    seen.Append(response.Event.Data.Pty.ToStringUtf8());
                    if (seen.ToString().Contains(word + "\r\n" + word + "\r\n", StringComparison.Ordinal))
                    {
                        break; // the echo and cat's copy: detach again
                    }
                }
            }
        }

        var missing = await Assert.ThrowsAsync<EnvdException>(async () =>
        {
            await foreach (var _ in connect.StreamAsync("process.Process/Connect", new ConnectRequest { Process = new ProcessSelector { Tag = "no-such-tag" } }, ConnectResponse.Parser, timeout.Token))
            {
            }
        });
        Assert.Equal(ConnectCodes.NotFound, missing.Code);
        await KillAsync(pid, timeout.Token);
    }

    [Fact(Timeout = 60_000)]
    public async Task List_returns_running_processes_with_their_config_pid_and_tag()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var request = Command("sleep 30", tag: "listed-" + Guid.NewGuid().ToString("N")[..6]);
        request.Process.Cwd = "/tmp";
        request.Process.Envs["LISTED"] = "yes";
        var pid = await StartDetachedAsync(request, timeout.Token);
        var list = await new RawConnect(agent, binary: true).UnaryAsync("process.Process/List", new ListRequest(), ListResponse.Parser, timeout.Token);
        var info = Assert.Single(list.Processes, p => p.Pid == pid);
        Assert.Equal(request.Tag, info.Tag);
        Assert.Equal("/bin/bash", info.Config.Cmd);
        Assert.Equal(["-c", "sleep 30"], info.Config.Args);
        Assert.Equal("/tmp", info.Config.Cwd);
        Assert.Equal("yes", info.Config.Envs["LISTED"]);

        await KillAsync(pid, timeout.Token);
        for (var i = 0; i < 100 && (await agent.Client().ListAsync(timeout.Token)).Any(p => p.Pid == pid); i++)
        {
            await Task.Delay(50, timeout.Token);
        }

        Assert.DoesNotContain(await agent.Client().ListAsync(timeout.Token), p => p.Pid == pid);
    }

    [Fact(Timeout = 90_000)]
    public async Task Output_nobody_watches_is_dropped_without_blocking_the_process()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(80));
        var marker = Path.Combine(agent.Root, "unwatched-" + Guid.NewGuid().ToString("N")[..6]);

        // 200 MB through a 64 KiB pipe: it finishes only if the agent keeps reading with no subscriber.
        var pid = await StartDetachedAsync(Command($"head -c 200000000 /dev/zero; echo done > {marker}"), timeout.Token);
        while (!File.Exists(marker))
        {
            await Task.Delay(100, timeout.Token);
        }

        for (var i = 0; i < 100 && (await agent.Client().ListAsync(timeout.Token)).Any(p => p.Pid == pid); i++)
        {
            await Task.Delay(50, timeout.Token);
        }

        Assert.DoesNotContain(await agent.Client().ListAsync(timeout.Token), p => p.Pid == pid);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_client_that_stops_reading_slows_the_process_down_instead_of_filling_the_agents_memory()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var marker = Path.Combine(agent.Root, "throttled-" + Guid.NewGuid().ToString("N")[..6]);
        long Rss() => long.Parse(File.ReadLines($"/proc/{agent.Pid}/status").Single(l => l.StartsWith("VmRSS:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        var before = Rss();

        // The response is opened but never read: the socket buffers fill, then the subscriber's bounded queue.
        var start = Command($"head -c 500000000 /dev/zero; echo done > {marker}");
        start.Tag = "throttled-" + Guid.NewGuid().ToString("N")[..6];
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(agent.BaseAddress, "process.Process/Start"));
        request.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token);
        request.Content = new ByteArrayContent(ConnectCodec.Envelope(0, ConnectCodec.Serialize(start, binary: false)));
        request.Content.Headers.ContentType = new MediaTypeHeaderValue(ConnectCodec.StreamJson);
        using (var response = await agent.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token))
        {
            await Task.Delay(TimeSpan.FromSeconds(3), timeout.Token); // unthrottled, 500 MB take well under a second
            Assert.False(File.Exists(marker), "the process wrote everything although its only reader read nothing");
            Assert.True(Rss() - before < 150_000_000, $"the agent grew by {(Rss() - before) / 1_000_000} MB holding unread output");
        }

        // The reader went away: the rest is dropped and the process finishes.
        while (!File.Exists(marker))
        {
            await Task.Delay(100, timeout.Token);
        }
    }

    /// <summary>e2b-dev/E2B#1074: re-attaching minutes later must still work (longer than Kestrel's 130 s keep-alive).</summary>
    [Fact(Timeout = 240_000)]
    [Trait("Category", "Slow")]
    public async Task Connect_still_reattaches_after_the_process_ran_unwatched_for_over_two_minutes()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(230));
        var script = "i=0; while true; do i=$((i+1)); echo tick$i; printf '%65536s\\n' x; sleep 1; done";
        var pid = await StartDetachedAsync(Command(script), timeout.Token);
        await Task.Delay(TimeSpan.FromSeconds(135), timeout.Token);

        var ticks = 0;
        var text = new System.Text.StringBuilder();
        await foreach (var response in new RawConnect(agent).StreamAsync("process.Process/Connect", new ConnectRequest { Process = ByPid(pid) }, ConnectResponse.Parser, timeout.Token, keepaliveSeconds: 1))
        {
            text.Append(response.Event.Data?.Stdout.ToStringUtf8());
            if (System.Text.RegularExpressions.Regex.Match(text.ToString(), @"(?m)^tick(\d+)$") is { Success: true } match)
            {
                ticks = int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                break;
            }
        }

        // It kept its pace while nobody listened (about a tick a second): ~64 KiB a tick would have filled a pipe at once.
        Assert.InRange(ticks, 100, 200);
        await KillAsync(pid, timeout.Token);
    }

    [Fact(Timeout = 60_000)]
    public async Task StreamInput_writes_each_message_as_it_arrives_and_answers_at_the_end_of_the_stream()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var connect = new RawConnect(agent);
        await using var session = new Session(connect, Command("cat", stdin: true), timeout.Token);
        var pid = await session.Pid;

        // The request body stays open between messages: the first must reach cat before the second is even sent.
        var messages = Channel.CreateUnbounded<byte[]>();
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(agent.BaseAddress, "process.Process/StreamInput"));
        request.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token);
        request.Content = new PushContent(messages.Reader);
        request.Content.Headers.ContentType = new MediaTypeHeaderValue(ConnectCodec.StreamJson);
        var call = agent.Http.SendAsync(request, timeout.Token);

        async Task SendAsync(StreamInputRequest message) =>
            await messages.Writer.WriteAsync(ConnectCodec.Envelope(0, ConnectCodec.Serialize(message, binary: false)), timeout.Token);

        await SendAsync(new StreamInputRequest { Start = new StreamInputRequest.Types.StartEvent { Process = ByPid(pid) } });
        await SendAsync(new StreamInputRequest { Data = new StreamInputRequest.Types.DataEvent { Input = new ProcessInput { Stdin = ByteString.CopyFromUtf8("first\n") } } });
        await session.WaitForAsync("first\n", timeout.Token);
        await SendAsync(new StreamInputRequest { Keepalive = new StreamInputRequest.Types.KeepAlive() });
        await SendAsync(new StreamInputRequest { Data = new StreamInputRequest.Types.DataEvent { Input = new ProcessInput { Stdin = ByteString.CopyFromUtf8("second\n") } } });
        await session.WaitForAsync("second\n", timeout.Token);
        Assert.False(call.IsCompleted);
        messages.Writer.Complete();

        using var response = await call;
        var reader = new ConnectCodec.EnvelopeReader();
        reader.Append(await response.Content.ReadAsByteArrayAsync(timeout.Token));
        Assert.True(reader.TryRead(out var flags, out _));
        Assert.Equal(0, flags);
        Assert.True(reader.TryRead(out flags, out var end));
        Assert.Equal(ConnectCodec.EndStreamFlag, flags);
        Assert.Null(ConnectCodec.ReadError(end, null));

        // Data before a start event, and a start naming no running process, end the call with an error.
        var headless = await Assert.ThrowsAsync<EnvdException>(() => connect.ClientStreamAsync(
            "process.Process/StreamInput",
            [new StreamInputRequest { Data = new StreamInputRequest.Types.DataEvent { Input = new ProcessInput { Stdin = ByteString.CopyFromUtf8("x") } } }],
            StreamInputResponse.Parser,
            timeout.Token));
        Assert.Equal(ConnectCodes.InvalidArgument, headless.Code);
        var unknown = await Assert.ThrowsAsync<EnvdException>(() => connect.ClientStreamAsync(
            "process.Process/StreamInput",
            [new StreamInputRequest { Start = new StreamInputRequest.Types.StartEvent { Process = ByPid(999_999) } }],
            StreamInputResponse.Parser,
            timeout.Token));
        Assert.Equal(ConnectCodes.NotFound, unknown.Code);

        await KillAsync(pid, timeout.Token);
    }

    /// <summary>A request body sent piece by piece, each piece flushed to the wire at once (chunked).</summary>
    private sealed class PushContent(ChannelReader<byte[]> pieces) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            await foreach (var piece in pieces.ReadAllAsync())
            {
                await stream.WriteAsync(piece);
                await stream.FlushAsync();
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }
    }
}
