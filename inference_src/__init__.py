"""Runtime code that ships inside model.tar.gz (code/). No CDK imports here."""
