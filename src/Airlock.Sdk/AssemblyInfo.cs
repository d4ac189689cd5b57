using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("Airlock.Sdk.Tests")]
