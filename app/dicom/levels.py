"""Which attributes belong to which level of the patient/study/series/instance hierarchy.

Used at ingest to split an instance's attributes into the rows of each level and at query
time for the default return attributes of QIDO-RS (PS3.18 Tables 10.6.3-3 to 10.6.3-5).
Attributes not listed for patient, study or series are instance-level.
"""

from __future__ import annotations

from enum import StrEnum


class Level(StrEnum):
    """Query/Retrieve levels (PS3.4 C.6); values are the DIMSE QueryRetrieveLevel terms."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "IMAGE"


# Patient module (PS3.3 C.7.1.1) and the patient identity attributes of PS3.4 C.6.1.1.2.
PATIENT_TAGS: frozenset[int] = frozenset(
    {
        0x00100010,  # PatientName
        0x00100020,  # PatientID
        0x00100021,  # IssuerOfPatientID
        0x00100022,  # TypeOfPatientID
        0x00100024,  # IssuerOfPatientIDQualifiersSequence
        0x00100030,  # PatientBirthDate
        0x00100032,  # PatientBirthTime
        0x00100033,  # PatientBirthDateInAlternativeCalendar
        0x00100035,  # PatientAlternativeCalendar
        0x00100040,  # PatientSex
        0x00100200,  # QualityControlSubject
        0x00100212,  # StrainDescription
        0x00101001,  # OtherPatientNames
        0x00101002,  # OtherPatientIDsSequence
        0x00101005,  # PatientBirthName
        0x00101040,  # PatientAddress
        0x00101060,  # PatientMotherBirthName
        0x00102154,  # PatientTelephoneNumbers
        0x00102160,  # EthnicGroup
        0x00102201,  # PatientSpeciesDescription
        0x00102202,  # PatientSpeciesCodeSequence
        0x00102292,  # PatientBreedDescription
        0x00102293,  # PatientBreedCodeSequence
        0x00102297,  # ResponsiblePerson
        0x00102298,  # ResponsiblePersonRole
        0x00102299,  # ResponsibleOrganization
        0x00104000,  # PatientComments
        0x00120062,  # PatientIdentityRemoved
        0x00120063,  # DeidentificationMethod
        0x00120064,  # DeidentificationMethodCodeSequence
    }
)

# General Study and Patient Study modules (PS3.3 C.7.2.1, C.7.2.2).
STUDY_TAGS: frozenset[int] = frozenset(
    {
        0x00080020,  # StudyDate
        0x00080030,  # StudyTime
        0x00080050,  # AccessionNumber
        0x00080051,  # IssuerOfAccessionNumberSequence
        0x00080090,  # ReferringPhysicianName
        0x00080096,  # ReferringPhysicianIdentificationSequence
        0x00081030,  # StudyDescription
        0x00081032,  # ProcedureCodeSequence
        0x00081048,  # PhysiciansOfRecord
        0x00081049,  # PhysiciansOfRecordIdentificationSequence
        0x00081060,  # NameOfPhysiciansReadingStudy
        0x00081062,  # PhysiciansReadingStudyIdentificationSequence
        0x00081080,  # AdmittingDiagnosesDescription
        0x00081084,  # AdmittingDiagnosesCodeSequence
        0x00081110,  # ReferencedStudySequence
        0x00101010,  # PatientAge
        0x00101020,  # PatientSize
        0x00101030,  # PatientWeight
        0x00102000,  # MedicalAlerts
        0x00102110,  # Allergies
        0x00102180,  # Occupation
        0x001021A0,  # SmokingStatus
        0x001021B0,  # AdditionalPatientHistory
        0x001021C0,  # PregnancyStatus
        0x00102203,  # PatientSexNeutered
        0x00200010,  # StudyID
        0x0020000D,  # StudyInstanceUID
        0x00321032,  # RequestingPhysician
        0x00321060,  # RequestedProcedureDescription
        0x00321064,  # RequestedProcedureCodeSequence
        0x00401012,  # ReasonForPerformedProcedureCodeSequence
    }
)

# General Series, General Equipment, Frame of Reference and related series-level modules.
SERIES_TAGS: frozenset[int] = frozenset(
    {
        0x00080021,  # SeriesDate
        0x00080031,  # SeriesTime
        0x00080060,  # Modality
        0x00080070,  # Manufacturer
        0x00080080,  # InstitutionName
        0x00080081,  # InstitutionAddress
        0x00081010,  # StationName
        0x0008103E,  # SeriesDescription
        0x0008103F,  # SeriesDescriptionCodeSequence
        0x00081040,  # InstitutionalDepartmentName
        0x00081050,  # PerformingPhysicianName
        0x00081052,  # PerformingPhysicianIdentificationSequence
        0x00081070,  # OperatorsName
        0x00081072,  # OperatorIdentificationSequence
        0x00081090,  # ManufacturerModelName
        0x00081111,  # ReferencedPerformedProcedureStepSequence
        0x00081250,  # RelatedSeriesSequence
        0x00180015,  # BodyPartExamined
        0x00181000,  # DeviceSerialNumber
        0x00181020,  # SoftwareVersions
        0x00181030,  # ProtocolName
        0x00185100,  # PatientPosition
        0x0020000E,  # SeriesInstanceUID
        0x00200011,  # SeriesNumber
        0x00200052,  # FrameOfReferenceUID
        0x00200060,  # Laterality
        0x00201040,  # PositionReferenceIndicator
        0x00400244,  # PerformedProcedureStepStartDate
        0x00400245,  # PerformedProcedureStepStartTime
        0x00400253,  # PerformedProcedureStepID
        0x00400254,  # PerformedProcedureStepDescription
        0x00400260,  # PerformedProtocolCodeSequence
        0x00400275,  # RequestAttributesSequence
    }
)

# Computed attributes, never read from an instance: the index maintains them.
MODALITIES_IN_STUDY = 0x00080061
NUMBER_OF_PATIENT_RELATED_STUDIES = 0x00201200
NUMBER_OF_STUDY_RELATED_SERIES = 0x00201206
NUMBER_OF_STUDY_RELATED_INSTANCES = 0x00201208
NUMBER_OF_SERIES_RELATED_INSTANCES = 0x00201209
INSTANCE_AVAILABILITY = 0x00080056
RETRIEVE_URL = 0x00081190
SPECIFIC_CHARACTER_SET = 0x00080005
TIMEZONE_OFFSET_FROM_UTC = 0x00080201

# Attributes copied into every level's stored attributes because they qualify the others.
SHARED_TAGS: frozenset[int] = frozenset({SPECIFIC_CHARACTER_SET, TIMEZONE_OFFSET_FROM_UTC})

# Default return attributes of QIDO-RS, PS3.18 Tables 10.6.3-3 (study), -4 (series), -5
# (instance). RetrieveURL is added by the web layer.
DEFAULT_RETURN: dict[Level, frozenset[int]] = {
    Level.PATIENT: frozenset(
        {
            SPECIFIC_CHARACTER_SET,
            0x00100010,  # PatientName
            0x00100020,  # PatientID
            0x00100021,  # IssuerOfPatientID
            0x00100030,  # PatientBirthDate
            0x00100040,  # PatientSex
            NUMBER_OF_PATIENT_RELATED_STUDIES,
        }
    ),
    Level.STUDY: frozenset(
        {
            SPECIFIC_CHARACTER_SET,
            0x00080020,  # StudyDate
            0x00080030,  # StudyTime
            0x00080050,  # AccessionNumber
            INSTANCE_AVAILABILITY,
            MODALITIES_IN_STUDY,
            0x00080090,  # ReferringPhysicianName
            TIMEZONE_OFFSET_FROM_UTC,
            RETRIEVE_URL,
            0x00100010,  # PatientName
            0x00100020,  # PatientID
            0x00100030,  # PatientBirthDate
            0x00100040,  # PatientSex
            0x0020000D,  # StudyInstanceUID
            0x00200010,  # StudyID
            NUMBER_OF_STUDY_RELATED_SERIES,
            NUMBER_OF_STUDY_RELATED_INSTANCES,
        }
    ),
    Level.SERIES: frozenset(
        {
            SPECIFIC_CHARACTER_SET,
            0x00080060,  # Modality
            TIMEZONE_OFFSET_FROM_UTC,
            0x0008103E,  # SeriesDescription
            RETRIEVE_URL,
            0x0020000E,  # SeriesInstanceUID
            0x00200011,  # SeriesNumber
            NUMBER_OF_SERIES_RELATED_INSTANCES,
            0x00400244,  # PerformedProcedureStepStartDate
            0x00400245,  # PerformedProcedureStepStartTime
            0x00400275,  # RequestAttributesSequence
        }
    ),
    Level.INSTANCE: frozenset(
        {
            SPECIFIC_CHARACTER_SET,
            0x00080016,  # SOPClassUID
            0x00080018,  # SOPInstanceUID
            INSTANCE_AVAILABILITY,
            TIMEZONE_OFFSET_FROM_UTC,
            RETRIEVE_URL,
            0x00200013,  # InstanceNumber
            0x00280010,  # Rows
            0x00280011,  # Columns
            0x00280100,  # BitsAllocated
            0x00280008,  # NumberOfFrames
        }
    ),
}


def level_of(tag: int) -> Level:
    """The level an attribute belongs to (instance for everything not listed above)."""
    if tag in PATIENT_TAGS:
        return Level.PATIENT
    if tag in STUDY_TAGS or tag in (
        MODALITIES_IN_STUDY,
        NUMBER_OF_STUDY_RELATED_SERIES,
        NUMBER_OF_STUDY_RELATED_INSTANCES,
    ):
        return Level.STUDY
    if tag in SERIES_TAGS or tag == NUMBER_OF_SERIES_RELATED_INSTANCES:
        return Level.SERIES
    return Level.INSTANCE
