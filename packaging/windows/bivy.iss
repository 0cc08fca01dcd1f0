; Inno Setup script for Bivy on Windows. Built by CI on a Windows runner:
;   python packaging/build.py --no-packages
;   iscc /DAppVersion=<version> packaging\windows\bivy.iss
; (AppVersion comes from the package metadata: python -c "import app; print(app.__version__)")
; Not buildable on the Linux development machines: Inno Setup runs on Windows only.

#ifndef AppVersion
  #error Pass the version: iscc /DAppVersion=X.Y.Z bivy.iss
#endif

[Setup]
AppId={{6C0F6B52-1D7E-4C4B-9E39-8C2C5B6D7A10}
AppName=Bivy
AppVersion={#AppVersion}
AppPublisher=Bivy developers
AppPublisherURL=https://github.com/bivy/bivy
DefaultDirName={autopf}\Bivy
DefaultGroupName=Bivy
DisableProgramGroupPage=yes
PrivilegesRequiredOverridesAllowed=dialog
OutputDir=..\dist
OutputBaseFilename=bivy-{#AppVersion}-windows-x64-setup
SetupIconFile=..\..\resources\icons\generated\bivy.ico
UninstallDisplayIcon={app}\bivy.exe
Compression=lzma2
SolidCompression=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
WizardStyle=modern
LicenseFile=..\..\LICENSE

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "..\dist\bivy\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\Bivy"; Filename: "{app}\bivy.exe"
Name: "{autodesktop}\Bivy"; Filename: "{app}\bivy.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\bivy.exe"; Description: "{cm:LaunchProgram,Bivy}"; Flags: nowait postinstall skipifsilent
