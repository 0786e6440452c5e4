"""Prompt experiments: A/B tests of prompt variants against an OpenAI-compatible server.

``templates`` renders each variant per dataset row, ``dataset`` reads rows from files,
``client`` talks to the server, ``runner`` sends the paired requests and resumes a stopped
run, ``scorers`` grades the answers, ``statistics`` computes intervals, paired tests and the
verdict, ``results`` turns all of it into the status payload, ``report`` writes the artifacts,
``experiment`` runs the whole thing and ``command`` is ``kubellm experiment``.

Importing the package loads none of them: ``kubellm --help`` stays fast, and torch is only
imported by a similarity scorer, when one is used.
"""
