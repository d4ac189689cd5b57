using Spectre.Console;

namespace Airlock.Cli;

/// <summary>Where the CLI writes: plain writers for data (stdout) and diagnostics (stderr), Spectre consoles for tables and colour.</summary>
internal sealed class CliConsole
{
    private readonly bool _errorColour;

    /// <param name="stdout">Data output.</param>
    /// <param name="stderr">Diagnostics.</param>
    /// <param name="environment">Reads environment variables (tests pass their own).</param>
    /// <param name="outColour">stdout is a terminal that takes colour.</param>
    /// <param name="errorColour">stderr is a terminal that takes colour.</param>
    public CliConsole(TextWriter stdout, TextWriter stderr, Func<string, string?> environment, bool outColour = false, bool errorColour = false)
    {
        Out = stdout;
        Error = stderr;
        Environment = environment;
        _errorColour = errorColour;
        Ui = Create(stdout, outColour);
        ErrorUi = Create(stderr, errorColour);
    }

    /// <summary>Command output and JSON.</summary>
    public TextWriter Out { get; }

    /// <summary>Errors and progress notes.</summary>
    public TextWriter Error { get; }

    /// <summary>Tables and markup on stdout.</summary>
    public IAnsiConsole Ui { get; }

    /// <summary>Markup on stderr.</summary>
    public IAnsiConsole ErrorUi { get; }

    public Func<string, string?> Environment { get; }

    public static CliConsole System()
    {
        var stdout = new StreamWriter(Console.OpenStandardOutput(), new global::System.Text.UTF8Encoding(false)) { AutoFlush = true };
        var stderr = new StreamWriter(Console.OpenStandardError(), new global::System.Text.UTF8Encoding(false)) { AutoFlush = true };
        // Colour only on terminals, and never with NO_COLOR (https://no-color.org).
        var colour = string.IsNullOrEmpty(global::System.Environment.GetEnvironmentVariable("NO_COLOR"));
        return new CliConsole(stdout, stderr, global::System.Environment.GetEnvironmentVariable,
            outColour: colour && !Console.IsOutputRedirected, errorColour: colour && !Console.IsErrorRedirected);
    }

    /// <summary>Writes <c>error: message</c> on one line (red on a terminal); scripts can match it.</summary>
    public void WriteError(string message) => Error.WriteLine((_errorColour ? "\u001b[31merror:\u001b[0m " : "error: ") + message);

    public void WriteWarning(string message) => Error.WriteLine((_errorColour ? "\u001b[33mwarning:\u001b[0m " : "warning: ") + message);

    private static IAnsiConsole Create(TextWriter writer, bool colour)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = colour ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = colour ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });
        if (!colour)
        {
            // Redirected output: do not wrap long lines at a guessed width.
            console.Profile.Width = 240;
        }

        return console;
    }
}
