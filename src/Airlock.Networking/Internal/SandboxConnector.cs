using System.Net;
using System.Net.Sockets;
using System.Text;
using Airlock.Core.Sandboxes;

namespace Airlock.Networking.Internal;

/// <summary>Opens host→sandbox TCP connections pinned to the sandbox's host interface.</summary>
internal static class SandboxConnector
{
    // socket(7): SOL_SOCKET = 1, SO_BINDTODEVICE = 25 on Linux.
    private const int SolSocket = 1;
    private const int SoBindToDevice = 25;

    public static async Task<Socket> ConnectAsync(
        SandboxNetwork network, int port, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(network);
        if (port is <= 0 or > 65535)
        {
            throw new ArgumentOutOfRangeException(nameof(port), port, "Not a TCP port.");
        }

        if (!IPAddress.TryParse(network.SandboxAddress, out var address))
        {
            throw new ArgumentException($"Sandbox address '{network.SandboxAddress}' of {network.Namespace} is not an IP address.", nameof(network));
        }

        var where = $"sandbox network {network.Namespace} ({network.SandboxAddress}:{port} via {network.HostInterface})";
        var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            try
            {
                socket.SetRawSocketOption(SolSocket, SoBindToDevice, Encoding.ASCII.GetBytes(network.HostInterface + "\0"));
            }
            catch (SocketException ex)
            {
                throw new SandboxConnectException(
                    $"Cannot bind to interface {network.HostInterface} for {where}: {ex.SocketErrorCode} (is the sandbox network gone?)", ex)
                { Namespace = network.Namespace };
            }

            socket.NoDelay = true;
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            cts.CancelAfter(timeout);
            try
            {
                await socket.ConnectAsync(new IPEndPoint(address, port), cts.Token);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new SandboxConnectException($"Timed out after {timeout.TotalSeconds:0.#} s connecting to {where}.")
                { Namespace = network.Namespace };
            }
            catch (SocketException ex)
            {
                throw new SandboxConnectException($"Cannot connect to {where}: {ex.SocketErrorCode}.", ex)
                { Namespace = network.Namespace };
            }

            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}
