using System.Net.Sockets;
using Airlock.Core.Sandboxes;

namespace Airlock.Core.Drivers;

/// <summary>Creates and removes a sandbox's own network namespace and link.</summary>
public interface INetworkManager
{
    /// <summary>
    /// Creates namespace, veth pair, addresses, routes and the firewall for <paramref name="policy"/> (default deny).
    /// A policy this manager cannot enforce is refused with <see cref="NotSupportedException"/>, never weakened.
    /// </summary>
    Task<SandboxNetwork> CreateAsync(string sandboxId, NetworkPolicy policy, CancellationToken cancellationToken);

    /// <summary>Replaces the network policy of a running sandbox (same refusal rule as <see cref="CreateAsync"/>).</summary>
    Task ApplyPolicyAsync(SandboxNetwork network, NetworkPolicy policy, CancellationToken cancellationToken);

    /// <summary>
    /// Prepares the namespace for a microVM: a tap device owned by <paramref name="tapOwner"/> that the VMM opens, with the
    /// sandbox address moved to the guest behind it. Returns the tap's name.
    /// </summary>
    Task<string> AttachGuestAsync(SandboxNetwork network, uint tapOwner, CancellationToken cancellationToken);

    Task DeleteAsync(SandboxNetwork network, CancellationToken cancellationToken);

    /// <summary>Namespaces and interfaces on the host that look like ours, by sandbox id.</summary>
    Task<IReadOnlyCollection<string>> FindLeftoversAsync(CancellationToken cancellationToken);

    Task DeleteLeftoverAsync(string sandboxId, CancellationToken cancellationToken);

    /// <summary>Opens a TCP connection from the host to a port inside the sandbox over its link.</summary>
    Task<Socket> ConnectAsync(SandboxNetwork network, int port, CancellationToken cancellationToken);
}
