"""Training the default rsclip-geo model (RemoteCLIP recipe); not part of the installed package."""
